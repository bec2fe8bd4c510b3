"""A burst of requests at start-up, all carrying a valid token, must all be verified.

Found by the benchmark: the first 64 concurrent requests through a fresh sidecar got 401
"signing key unknown" because only the first one waited for the JWKS fetch.
"""

from __future__ import annotations

import asyncio
from typing import Any

from skillwarden_sidecar.jwks import JwksCache

JWK = {"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256",
       "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}


async def test_concurrent_cold_lookups_all_wait_for_the_single_fetch() -> None:
    fetches = 0

    async def fetch() -> dict[str, Any]:
        nonlocal fetches
        fetches += 1
        await asyncio.sleep(0.01)  # a real fetch yields; the others arrive meanwhile
        return {"keys": [JWK]}

    cache = JwksCache(fetch, ttl=600, refetch_interval=30)
    keys = await asyncio.gather(*(cache.key("k1") for _ in range(64)))
    assert all(key is not None for key in keys)
    assert fetches == 1  # still single flight: the rate limit on refetches holds
