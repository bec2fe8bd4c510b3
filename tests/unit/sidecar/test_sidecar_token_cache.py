"""Verified-token cache: hits skip the signature check, but expiry, key rotation, the LRU bound
and "failures are never cached" hold."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from skillwarden_sidecar.errors import Rejection, unauthenticated
from skillwarden_sidecar.identity import TokenCache, TokenVerifier, TrustedIssuer
from skillwarden_sidecar.jwks import JwksCache
from skillwarden_sidecar.token_review import TokenReviewer

ISSUER = "https://issuer.example"
AUDIENCE = "skillwarden"
LEEWAY = 5.0


class Keys:
    """An issuer whose signing key can rotate under the same kid."""

    def __init__(self) -> None:
        self.private = ec.generate_private_key(ec.SECP256R1())
        self.fetches = 0

    def rotate(self) -> None:
        self.private = ec.generate_private_key(ec.SECP256R1())

    async def fetch(self) -> dict[str, Any]:
        self.fetches += 1
        jwk = ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {"keys": [{**jwk, "kid": "k1", "alg": "ES256", "use": "sig"}]}

    def token(self, exp_in: float = 300, sub: str = "alice", **extra: Any) -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + int(exp_in),
                  "groups": ["finance-analysts"], **extra}
        return jwt.encode(claims, self.private, algorithm="ES256", headers={"kid": "k1"})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(keys: Keys, jwks_clock: Clock, size: int = 4096,
         leeway: float = LEEWAY) -> tuple[TokenVerifier, TokenCache]:
    # JWKS: fresh 600 s, an unknown kid may refetch every 30 s (monotonic clock of its own).
    jwks = JwksCache(keys.fetch, ttl=600, refetch_interval=30, clock=jwks_clock)
    cache = TokenCache(size=size)
    verifier = TokenVerifier([TrustedIssuer("oidc", ISSUER, (AUDIENCE,), jwks)], ["ES256"], leeway,
                             cache=cache)
    return verifier, cache


async def test_hit_returns_identity_without_reverifying(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = Keys()
    verifier, cache = make(keys, Clock())
    token = keys.token()
    first = await verifier.verify(token)
    assert first.sub == "alice" and first.groups == ("finance-analysts",) and len(cache) == 1
    decodes: list[str] = []
    real = jwt.decode

    def counting(*args: Any, **kwargs: Any) -> Any:
        decodes.append("x")
        return real(*args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting)
    assert await verifier.verify(token) == first
    assert decodes == []  # no parse, no signature check on a hit


async def test_cached_token_past_exp_is_rejected_in_real_time() -> None:
    keys = Keys()
    verifier, cache = make(keys, Clock(), leeway=0)
    token = keys.token(exp_in=1)
    assert (await verifier.verify(token)).sub == "alice" and len(cache) == 1
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    await asyncio.sleep(max(0.0, exp - time.time()) + 0.05)
    with pytest.raises(Rejection) as refused:
        await verifier.verify(token)
    assert refused.value.status == 401 and "expired" in str(refused.value)
    assert len(cache) == 0


async def test_cached_entry_is_not_served_past_exp_plus_leeway() -> None:
    keys = Keys()
    verifier, cache = make(keys, Clock())
    token = keys.token(exp_in=20)
    now = time.time()
    await verifier.verify(token, now=now)
    assert len(cache) == 1
    # Within exp + leeway the hit is served; past it the entry is gone and PyJWT (real clock)
    # decides again. Simulate a token that really is expired by now:
    assert cache.get(token, now + 20 + LEEWAY + 1) is None and len(cache) == 0
    expired = keys.token(exp_in=-(LEEWAY + 2))
    with pytest.raises(Rejection) as refused:
        await verifier.verify(expired)
    assert refused.value.status == 401 and "expired" in str(refused.value)
    assert len(cache) == 0


async def test_entry_lives_at_most_60_seconds_and_nbf_is_rechecked() -> None:
    keys = Keys()
    verifier, cache = make(keys, Clock())
    now = time.time()
    token = keys.token(exp_in=3600)
    await verifier.verify(token, now=now)
    assert cache.get(token, now + 59) is not None
    assert cache.get(token, now + 61) is None
    # iat/nbf: a hit "before" the token's start (clock stepped back) is not served from the cache.
    await verifier.verify(token, now=now)
    assert cache.get(token, now - 3600) is None


async def test_rotated_key_for_kid_is_reverified_and_rejected() -> None:
    keys, jwks_clock = Keys(), Clock()
    verifier, cache = make(keys, jwks_clock)
    token = keys.token()
    assert (await verifier.verify(token)).sub == "alice" and keys.fetches == 1
    keys.rotate()  # the issuer now publishes a different key under kid "k1"
    jwks_clock.now += 601  # the JWKS refreshes after its TTL
    with pytest.raises(Rejection) as refused:
        await verifier.verify(token)
    assert refused.value.status == 401 and "signature invalid" in str(refused.value)
    assert keys.fetches == 2 and len(cache) == 0
    # a token signed with the new key verifies and is cached
    fresh = keys.token(sub="bob")
    assert (await verifier.verify(fresh)).sub == "bob" and len(cache) == 1


async def test_lru_bound_holds_and_evicts_least_recently_used() -> None:
    keys = Keys()
    verifier, cache = make(keys, Clock(), size=3)
    tokens = [keys.token(sub=f"user{i}") for i in range(5)]
    for token in tokens[:3]:
        await verifier.verify(token)
    await verifier.verify(tokens[0])  # touch: now the most recently used
    for token in tokens[3:]:
        await verifier.verify(token)
    assert len(cache) == 3
    now = time.time()
    assert cache.get(tokens[0], now) is not None
    assert cache.get(tokens[1], now) is None and cache.get(tokens[2], now) is None


async def test_failures_are_not_cached() -> None:
    keys = Keys()
    verifier, cache = make(keys, Clock())
    good = keys.token()
    header, payload, signature = good.split(".")
    tampered = f"{header}.{payload}.{signature[:-4]}AAAA"
    wrong_audience = jwt.encode({"iss": ISSUER, "aud": "other", "exp": int(time.time()) + 60,
                                 "iat": int(time.time())}, keys.private, algorithm="ES256",
                                headers={"kid": "k1"})
    for bad in (tampered, wrong_audience, tampered):
        with pytest.raises(Rejection) as refused:
            await verifier.verify(bad)
        assert refused.value.status == 401
    assert len(cache) == 0


class Review(TokenReviewer):
    """TokenReview stand-in: counts confirmations; refuses once `revoked`."""

    def __init__(self) -> None:  # no API server: only confirm() is used
        self.calls = 0
        self.revoked = False

    async def confirm(self, token: str) -> None:
        self.calls += 1
        if self.revoked:
            raise unauthenticated("service-account token no longer valid (TokenReview)")


async def test_token_review_still_runs_on_every_cache_hit() -> None:
    keys, review = Keys(), Review()
    jwks = JwksCache(keys.fetch, ttl=600, refetch_interval=30, clock=Clock())
    cache = TokenCache()
    verifier = TokenVerifier([TrustedIssuer("serviceaccount", ISSUER, (AUDIENCE,), jwks, review)],
                             ["ES256"], LEEWAY, cache=cache)
    token = keys.token()
    await verifier.verify(token)
    await verifier.verify(token)
    assert review.calls == 2 and len(cache) == 1  # the signature part was cached, the review was not
    review.revoked = True  # service account deleted: the cached signature must not let it through
    with pytest.raises(Rejection) as refused:
        await verifier.verify(token)
    assert refused.value.status == 401 and "TokenReview" in str(refused.value)
