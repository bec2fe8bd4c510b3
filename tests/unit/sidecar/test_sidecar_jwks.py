"""JWKS cache: TTL, rate-limited refetch on unknown kid, single flight, stale keys when down."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from skillwarden_sidecar.jwks import JwksCache, parse_jwks


def _jwk(kid: str, **extra: Any) -> dict[str, Any]:
    numbers = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_numbers()

    def b64(v: int) -> str:
        return base64.urlsafe_b64encode(v.to_bytes((v.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()

    return {"kty": "RSA", "kid": kid, "alg": "RS256", "n": b64(numbers.n), "e": b64(numbers.e), **extra}


KEY_A, KEY_B = _jwk("a"), _jwk("b")


class Issuer:
    def __init__(self) -> None:
        self.keys = [KEY_A]
        self.fetches = 0
        self.down = False

    async def fetch(self) -> dict[str, Any]:
        self.fetches += 1
        await asyncio.sleep(0)
        if self.down:
            raise OSError("connection refused")
        return {"keys": list(self.keys)}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_cache_fresh_then_refetch_after_ttl() -> None:
    issuer, clock = Issuer(), Clock()
    cache = JwksCache(issuer.fetch, ttl=600, refetch_interval=30, clock=clock)
    assert await cache.key("a") is not None and issuer.fetches == 1
    clock.now += 599
    assert await cache.key("a") is not None and issuer.fetches == 1
    clock.now += 2
    assert await cache.key("a") is not None and issuer.fetches == 2


async def test_unknown_kid_refetch_is_rate_limited_and_single_flight() -> None:
    issuer, clock = Issuer(), Clock()
    cache = JwksCache(issuer.fetch, ttl=600, refetch_interval=30, clock=clock)
    results = await asyncio.gather(*(cache.key(f"random-{i}") for i in range(100)))
    assert results == [None] * 100 and issuer.fetches == 1
    clock.now += 10
    assert await cache.key("b") is None and issuer.fetches == 1  # within the interval: no fetch
    issuer.keys.append(KEY_B)  # the issuer rotates in a new key
    clock.now += 21
    assert await cache.key("b") is not None and issuer.fetches == 2


async def test_stale_keys_served_while_issuer_down() -> None:
    issuer, clock = Issuer(), Clock()
    cache = JwksCache(issuer.fetch, ttl=300, refetch_interval=30, clock=clock)
    assert await cache.key("a") is not None
    issuer.down = True
    clock.now += 3600
    assert await cache.key("a") is not None  # stale but the only truth we have
    assert await cache.key("b") is None


def test_parse_jwks_skips_symmetric_encryption_and_broken_keys() -> None:
    keys = parse_jwks({"keys": [KEY_A, {"kty": "oct", "kid": "hs", "k": "c2VjcmV0"}, _jwk("enc", use="enc"),
                                {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"}, {"kid": ""}]})
    assert sorted(keys) == ["a"]
