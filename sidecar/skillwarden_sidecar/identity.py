"""Who is calling: the workload (always) and, when presented, a verified bearer token.

Token verification follows RFC 8725: the accepted algorithms come from configuration (never from
the token; `none` and every HS* are refused before any key is looked up), the token's issuer
selects one configured issuer and only that issuer's JWKS keys are tried, and iss/aud/exp/iat are
required (nbf honoured) with a bounded leeway. Any failure is a 401 naming the reason.

Anthropic SDKs send the credential as `x-api-key` or `Authorization: Bearer` (SDK 2.x sends its
`api_key` as Bearer). A value that is not JWT-shaped is the placeholder an SDK insists on and is
ignored (the caller is the workload). A JWT-shaped value (two dots, non-empty header and payload,
even with an empty signature) must verify, or the request is refused with 401. Either way the
caller's credential never goes upstream (`forwarding` builds upstream headers from an allow-list).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from skillwarden_sidecar.errors import unauthenticated
from skillwarden_sidecar.jwks import JwksCache
from skillwarden_sidecar.pipeline import Identity
from skillwarden_sidecar.token_review import TokenReviewer

WORKLOAD = Identity(kind="workload")


@dataclass(frozen=True)
class TrustedIssuer:
    kind: str  # "oidc" | "serviceaccount"
    issuer: str
    audiences: tuple[str, ...]
    jwks: JwksCache
    review: TokenReviewer | None = None  # serviceaccount only: confirm with the API server


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
                 groups_claim: str = "groups", email_claim: str = "email") -> None:
        self._issuers = {i.issuer: i for i in issuers}
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

    async def verify(self, token: str) -> Identity:
        if not self._issuers:
            raise unauthenticated("tokens are not accepted here (no issuer configured)")
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
        if issuer.review is not None:
            await issuer.review.confirm(token)
        return self._identity(issuer, claims)

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
