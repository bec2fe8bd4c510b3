"""Who is calling: the workload (always) and, when presented, a verified bearer token.

Token verification follows RFC 8725: the accepted algorithms come from configuration (never from
the token; `none` and every HS* are refused before any key is looked up), the token's issuer
selects one configured issuer and only that issuer's JWKS keys are tried, and iss/aud/exp/iat are
required (nbf honoured) with a bounded leeway. Any failure is a 401 naming the reason.

A verified token is remembered (`TokenCache`, keyed by the exact token string) so the signature
check and the JWT parses run once per token, not once per request (they were 20% of the sidecar's
CPU, docs/performance.md). An entry lives until the earlier of exp + leeway and 60 s; every hit
re-checks exp/nbf/iat against `now` and that the issuer's JWKS still returns the very key object
the signature was checked with (a rotation or any refetch drops the entry, the token is verified
again). Failures are never cached. TokenReview, when configured, still runs on every request (it
has its own 30 s cache in `token_review`): only the signature part is cached here.

Anthropic SDKs send the credential as `x-api-key` or `Authorization: Bearer` (SDK 2.x sends its
`api_key` as Bearer). A value that is not JWT-shaped is the placeholder an SDK insists on and is
ignored (the caller is the workload). A JWT-shaped value (two dots, non-empty header and payload,
even with an empty signature) must verify, or the request is refused with 401. Either way the
caller's credential never goes upstream (`forwarding` builds upstream headers from an allow-list).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from skillwarden_sidecar.errors import unauthenticated
from skillwarden_sidecar.jwks import JwksCache
from skillwarden_sidecar.pipeline import Identity
from skillwarden_sidecar.token_review import TokenReviewer

WORKLOAD = Identity(kind="workload")
TOKEN_CACHE_SIZE = 4096
TOKEN_CACHE_SECONDS = 60.0


@dataclass(frozen=True)
class TrustedIssuer:
    kind: str  # "oidc" | "serviceaccount"
    issuer: str
    audiences: tuple[str, ...]
    jwks: JwksCache
    review: TokenReviewer | None = None  # serviceaccount only: confirm with the API server


@dataclass(frozen=True)
class _Verified:
    identity: Identity
    issuer: TrustedIssuer
    kid: str
    key: jwt.PyJWK  # the key object the signature was checked with
    not_before: float  # max(nbf, iat) - leeway
    expires: float  # exp + leeway
    until: float  # min(expires, verified at + TOKEN_CACHE_SECONDS)


class TokenCache:
    """Bounded LRU of verified tokens. Holds successes only; time is passed in."""

    def __init__(self, size: int = TOKEN_CACHE_SIZE, seconds: float = TOKEN_CACHE_SECONDS) -> None:
        self._size = size
        self._seconds = seconds
        self._entries: OrderedDict[str, _Verified] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str, now: float) -> _Verified | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        if not entry.not_before <= now < entry.until:
            del self._entries[token]
            return None
        self._entries.move_to_end(token)
        return entry

    def put(self, token: str, entry: _Verified) -> None:
        self._entries[token] = entry
        self._entries.move_to_end(token)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def drop(self, token: str) -> None:
        self._entries.pop(token, None)

    def lifetime(self, now: float) -> float:
        return now + self._seconds


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _looks_like_jwt(value: str) -> bool:
    # An unsigned (`alg: none`) token has an empty third part: still a token, still refused.
    header, payload = [*value.split("."), "", ""][:2]
    return value.count(".") == 2 and bool(header) and bool(payload)


def presented_token(headers: Mapping[str, str]) -> str | None:
    """The caller's bearer token, or None for "no token" (workload identity)."""
    candidates: list[str] = []
    authorization = headers.get("Authorization")
    if authorization is not None:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise unauthenticated("Authorization header is not 'Bearer <token>'")
        candidates.append(value.strip())
    candidates.append(headers.get("x-api-key", "").strip())
    tokens = {c for c in candidates if _looks_like_jwt(c)}
    if len(tokens) > 1:
        raise unauthenticated("two different tokens presented (Authorization and x-api-key)")
    return tokens.pop() if tokens else None


class TokenVerifier:
    def __init__(self, issuers: Sequence[TrustedIssuer], algorithms: Sequence[str], leeway: float,
                 groups_claim: str = "groups", email_claim: str = "email",
                 cache: TokenCache | None = None, clock: Callable[[], float] = time.time) -> None:
        self._issuers = {i.issuer: i for i in issuers}
        self._cache = TokenCache() if cache is None else cache
        self._clock = clock  # wall clock: exp/nbf/iat are seconds since the epoch
        self._algorithms = list(algorithms)
        self._leeway = leeway
        self._groups_claim = groups_claim
        self._email_claim = email_claim

    @property
    def issuers(self) -> list[TrustedIssuer]:
        return list(self._issuers.values())

    async def identify(self, headers: Mapping[str, str]) -> Identity:
        token = presented_token(headers)
        return WORKLOAD if token is None else await self.verify(token)

    async def verify(self, token: str, now: float | None = None) -> Identity:
        if not self._issuers:
            raise unauthenticated("tokens are not accepted here (no issuer configured)")
        now = self._clock() if now is None else now
        cached = self._cache.get(token, now)
        if cached is not None:
            # Same key object still served for this kid: no rotation, no refetch since.
            if await cached.issuer.jwks.key(cached.kid) is cached.key:
                if cached.issuer.review is not None:
                    await cached.issuer.review.confirm(token)
                return cached.identity
            self._cache.drop(token)
        identity, entry = await self._verify_signature(token, now)
        if entry is not None:
            self._cache.put(token, entry)
        if entry is not None and entry.issuer.review is not None:
            await entry.issuer.review.confirm(token)
        return identity

    async def _verify_signature(self, token: str, now: float) -> tuple[Identity, _Verified | None]:
        """Everything but TokenReview. Raises on any failure (nothing is cached then)."""
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise unauthenticated("malformed token") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise unauthenticated(f"algorithm {alg!r} not allowed (allowed: {', '.join(self._algorithms)})")
        claimed = unverified.get("iss")
        issuer = self._issuers.get(claimed) if isinstance(claimed, str) else None
        if issuer is None:
            raise unauthenticated("issuer not trusted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise unauthenticated("token has no key id (kid)")
        key = await issuer.jwks.key(kid)
        if key is None:
            raise unauthenticated("signing key unknown to the issuer's JWKS")
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key=key, algorithms=self._algorithms, audience=list(issuer.audiences),
                issuer=issuer.issuer, leeway=self._leeway,
                options={"require": ["exp", "iat", "iss", "aud"], "verify_nbf": True, "strict_aud": False})
        except jwt.ExpiredSignatureError:
            raise unauthenticated("token expired") from None
        except jwt.ImmatureSignatureError:
            raise unauthenticated("token not yet valid (nbf/iat in the future)") from None
        except jwt.InvalidAudienceError:
            raise unauthenticated("audience not accepted") from None
        except jwt.InvalidIssuerError:
            raise unauthenticated("issuer not trusted") from None
        except jwt.MissingRequiredClaimError as error:
            raise unauthenticated(f"required claim {error.claim!r} missing") from None
        except jwt.InvalidAlgorithmError:
            raise unauthenticated("algorithm does not match the signing key") from None
        except jwt.InvalidSignatureError:
            raise unauthenticated("signature invalid") from None
        except jwt.PyJWTError as error:
            raise unauthenticated(f"token invalid ({type(error).__name__})") from None
        identity = self._identity(issuer, claims)
        exp = _number(claims, "exp")
        if exp is None:  # PyJWT required it and checked it is a number; belt and braces
            return identity, None
        starts = [t for t in (_number(claims, "nbf"), _number(claims, "iat")) if t is not None]
        expires = exp + self._leeway
        entry = _Verified(identity=identity, issuer=issuer, kid=kid, key=key,
                          not_before=max(starts, default=float("-inf")) - self._leeway,
                          expires=expires, until=min(expires, self._cache.lifetime(now)))
        return identity, entry

    def _identity(self, issuer: TrustedIssuer, claims: dict[str, Any]) -> Identity:
        groups_value = claims.get(self._groups_claim, [])
        if isinstance(groups_value, str):
            groups_value = [groups_value]
        if not isinstance(groups_value, list):
            groups_value = []
        groups = tuple(g for g in groups_value if isinstance(g, str))
        email = claims.get(self._email_claim)
        sub = str(claims.get("sub", ""))
        if issuer.kind == "serviceaccount":
            k8s = claims.get("kubernetes.io")
            if isinstance(k8s, dict) and isinstance(k8s.get("namespace"), str):
                account = k8s.get("serviceaccount")
                name = account.get("name") if isinstance(account, dict) else None
                if isinstance(name, str):
                    namespace = k8s["namespace"]
                    sub = f"system:serviceaccount:{namespace}:{name}"
                    # The groups the API server itself gives a service account (RBAC semantics).
                    groups = groups or ("system:serviceaccounts", f"system:serviceaccounts:{namespace}")
        return Identity(kind=issuer.kind, sub=sub, iss=issuer.issuer, groups=groups,
                        email=email if isinstance(email, str) else "")
