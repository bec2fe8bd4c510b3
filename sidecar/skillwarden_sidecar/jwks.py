"""JWKS cache for token verification, shaped by RFC 8725 and by what goes wrong in practice.

PyJWT's `PyJWKClient` refetches on every unknown `kid`, so a client spraying random key ids turns
the sidecar into a amplifier against the issuer. Here:
- fetched keys are fresh for `ttl` seconds (5-15 min);
- an unknown `kid` triggers a refetch at most once per `refetch_interval` (30-60 s), and concurrent
  misses share one fetch (single flight);
- when a fetch fails (issuer down), the keys already known keep being served.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import orjson

log = logging.getLogger("skillwarden.sidecar.jwks")

Fetch = Callable[[], Awaitable[dict[str, Any]]]


class JwksError(RuntimeError):
    pass


def parse_jwks(document: dict[str, Any]) -> dict[str, jwt.PyJWK]:
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise JwksError("JWKS document has no 'keys' list")
    parsed: dict[str, jwt.PyJWK] = {}
    for entry in keys:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid:
            continue
        if entry.get("kty") == "oct":
            continue  # a symmetric key has no place in a public key set
        try:
            parsed[kid] = jwt.PyJWK(entry)
        except (jwt.PyJWKError, jwt.InvalidKeyError):
            log.warning("ignoring unusable JWKS key kid=%s", kid)
    return parsed


class JwksCache:
    def __init__(self, fetch: Fetch, ttl: float, refetch_interval: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch
        self._ttl = ttl
        self._interval = refetch_interval
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._last_attempt: float | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0  # attempts, for tests and the readiness view

    async def key(self, kid: str) -> jwt.PyJWK | None:
        now = self._clock()
        stale = self._fetched_at is None or now - self._fetched_at > self._ttl
        if kid in self._keys and not stale:
            return self._keys[kid]
        # A fetch already in flight: wait for it instead of answering "unknown key" from the
        # still-empty cache (a burst at start-up otherwise got 401s for valid tokens).
        if self._may_fetch(now) or self._lock.locked():
            await self._refresh()
        return self._keys.get(kid)

    def _may_fetch(self, now: float) -> bool:
        return self._last_attempt is None or now - self._last_attempt >= self._interval

    async def _refresh(self) -> None:
        async with self._lock:
            now = self._clock()
            if not self._may_fetch(now):
                return  # someone else fetched while we waited for the lock
            self._last_attempt = now
            self.fetches += 1
            try:
                keys = parse_jwks(await self._fetch())
            except (JwksError, aiohttp.ClientError, TimeoutError, OSError, ValueError) as error:
                # Issuer down or garbage: keep serving what we have (fail closed only for keys
                # we never saw).
                log.warning("JWKS fetch failed (%s); serving %d cached keys", type(error).__name__,
                            len(self._keys))
                return
            self._keys = keys
            self._fetched_at = now


def file_source(path: Path) -> Fetch:
    async def fetch() -> dict[str, Any]:
        loaded: dict[str, Any] = orjson.loads(await asyncio.to_thread(path.read_bytes))
        return loaded
    return fetch


async def _get_json(session: aiohttp.ClientSession, url: str, token_file: Path | None) -> dict[str, Any]:
    # kube-apiserver answers 406 unless the JWK Set media type is acceptable
    headers = {"Accept": "application/json, application/jwk-set+json"}
    if token_file is not None:  # projected tokens rotate: read it each time
        token = await asyncio.to_thread(token_file.read_text)
        headers["Authorization"] = "Bearer " + token.strip()
    async with session.get(url, headers=headers, allow_redirects=False) as response:
        if response.status != 200:
            raise JwksError(f"GET {url} answered {response.status}")
        document = orjson.loads(await response.read())
    if not isinstance(document, dict):
        raise JwksError(f"GET {url} did not return a JSON object")
    return document


def url_source(session: aiohttp.ClientSession, url: str, token_file: Path | None = None) -> Fetch:
    async def fetch() -> dict[str, Any]:
        return await _get_json(session, url, token_file)
    return fetch


def discovery_source(session: aiohttp.ClientSession, issuer: str, token_file: Path | None = None) -> Fetch:
    """OIDC discovery: `<issuer>/.well-known/openid-configuration` names the `jwks_uri`."""
    jwks_uri: list[str] = []

    async def fetch() -> dict[str, Any]:
        if not jwks_uri:
            document = await _get_json(session, issuer.rstrip("/") + "/.well-known/openid-configuration",
                                       token_file)
            if document.get("issuer") != issuer:
                raise JwksError("discovery document names a different issuer")
            uri = document.get("jwks_uri")
            if not isinstance(uri, str) or not uri.startswith(("https://", "http://")):
                raise JwksError("discovery document has no usable jwks_uri")
            jwks_uri.append(uri)
        return await _get_json(session, jwks_uri[0], token_file)
    return fetch
