"""Optional Kubernetes TokenReview for service-account tokens.

A projected token verifies offline against the issuer's JWKS until it expires, even after its pod
or service account was deleted. With `--sa-token-review-url` set, each verified service-account
token is also confirmed by the API server (`TokenReview`, the same check the API server applies
to its own clients). Answers are cached briefly by token hash; when the API server cannot answer,
the token is refused (fail closed).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import orjson

from skillwarden_sidecar.errors import Rejection, unauthenticated

_MAX_ENTRIES = 10_000


class TokenReviewer:
    def __init__(self, session: aiohttp.ClientSession, api_url: str, token_file: Path | None,
                 audiences: tuple[str, ...], ttl: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._session = session
        self._url = api_url.rstrip("/") + "/apis/authentication.k8s.io/v1/tokenreviews"
        self._token_file = token_file
        self._audiences = list(audiences)
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[str, tuple[bool, float]] = {}
        self.reviews = 0

    async def confirm(self, token: str) -> None:
        """Return when the API server confirms the token; raise a 401/503 `Rejection` otherwise."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is None or cached[1] <= now:
            authenticated = await self._review(token)
            if len(self._cache) >= _MAX_ENTRIES:
                self._cache.clear()  # bounded memory; the next requests simply ask again
            self._cache[digest] = (authenticated, now + self._ttl)
        else:
            authenticated = cached[0]
        if not authenticated:
            raise unauthenticated("service-account token no longer valid (TokenReview)")

    async def _review(self, token: str) -> bool:
        self.reviews += 1
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._token_file is not None:
            credential = await asyncio.to_thread(self._token_file.read_text)
            headers["Authorization"] = "Bearer " + credential.strip()
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "spec": {"token": token, "audiences": self._audiences}}
        try:
            async with self._session.post(self._url, data=orjson.dumps(body), headers=headers) as response:
                payload = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError):
            raise _unavailable() from None
        if status != 201 and status != 200:
            raise _unavailable()
        try:
            document = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise _unavailable() from None
        review_status = document.get("status") if isinstance(document, dict) else None
        return isinstance(review_status, dict) and review_status.get("authenticated") is True


def _unavailable() -> Rejection:
    return Rejection(503, "could not confirm the service-account token with the Kubernetes API; "
                     "request denied", cause="token_review_unavailable", error_type="api_error")
