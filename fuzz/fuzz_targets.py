"""Fuzz targets shared by the hypothesis tests (tests/unit/fuzz/) and the atheris harnesses (fuzz/).

Each target takes untrusted input and must either succeed or raise one of the exception types it
documents (`ALLOWED`); anything else is a crash. Targets are plain functions so both engines run
exactly the same code.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from typing import Any

import orjson
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from skillwarden_operator import injection
from skillwarden_operator.bundle import build_bundle
from skillwarden_operator.policy_model import validate_policy
from skillwarden_sidecar.errors import Rejection
from skillwarden_sidecar.identity import TokenVerifier, TrustedIssuer, presented_token
from skillwarden_sidecar.jwks import JwksCache
from skillwarden_sidecar.masking import BUILTIN_ENTITIES, Masker, MaskingSpec
from skillwarden_sidecar.masking.engine import MaskingBudgetExceeded
from skillwarden_sidecar.masking.stream import StreamMasker
from skillwarden_sidecar.masking.structured import MaskingDepthError, mask_request_body
from skillwarden_sidecar.message_stream import MessageAccumulator
from skillwarden_sidecar.pipeline import Exchange, Workload
from skillwarden_sidecar.policy import build_input
from skillwarden_sidecar.routes import resolve
from skillwarden_sidecar.sse import SseDecoder, SseError

MASKER = Masker(
    MaskingSpec(
        BUILTIN_ENTITIES,
        {"CREDIT_CARD": "partial", "EMAIL_ADDRESS": "hmac"},
        hmac_key=b"fuzz-key-0123456789",
        hmac_key_id="fuzz",
        max_text_bytes=1 << 20,
        max_scan_seconds=2.0,
    )
)


# -- SSE decoder + stream masker + message accumulator (the response relay) -------------------------

SSE_ALLOWED: tuple[type[BaseException], ...] = (SseError, MaskingBudgetExceeded)


def sse_relay(data: bytes, cuts: list[int]) -> None:
    """The relay's path for upstream bytes cut into chunks: decode, mask, rebuild the message."""
    decoder = SseDecoder(max_event_bytes=256 * 1024)
    masker = StreamMasker(MASKER)
    accumulated = MessageAccumulator()
    chunks, start = [], 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}):
        chunks.append(data[start:cut])
        start = cut
    chunks.append(data[start:])
    for chunk in chunks:
        for event in decoder.feed(chunk):
            for masked in masker.feed(event):
                accumulated.add(masked)
                masked.encode()
    for event in decoder.close():
        for masked in masker.feed(event):
            accumulated.add(masked)
    for event in masker.close():
        accumulated.add(event)
    accumulated.finish()


# -- request parser and decision input -------------------------------------------------------------

REQUEST_ALLOWED: tuple[type[BaseException], ...] = (Rejection,)
WORKLOAD = Workload("finance", "report-7f9c", "report-bot")


def request_parse(method: str, raw_path: str, body: bytes) -> dict[str, Any] | None:
    """Route, parse (as `stages.read_body` does) and build the OPA input; the input must be JSON."""
    route = resolve(method, raw_path)
    exchange = Exchange(
        request_id="req_fuzz",
        received_at=0.0,
        method=method,
        path=raw_path.split("?")[0],
        query="",
        operation=route.operation,
        workload=WORKLOAD,
    )
    try:
        body.decode("utf-8")
        parsed = orjson.loads(body)
    except (UnicodeDecodeError, orjson.JSONDecodeError):
        raise Rejection(400, "bad json", cause="bad_json") from None
    if not isinstance(parsed, dict):
        raise Rejection(400, "not an object", cause="bad_json")
    exchange.body = parsed
    document = build_input(exchange, route)
    orjson.dumps(document)  # what the sidecar POSTs to OPA
    request = document["request"]
    assert isinstance(request["model"], str) and isinstance(request["max_tokens"], int)
    assert isinstance(request["prompt_text"], str) and request["prompt_chars"] == len(request["prompt_text"])
    assert all(isinstance(s["skill_id"], str) for s in request["skills"])
    return document


MASK_ALLOWED: tuple[type[BaseException], ...] = (MaskingDepthError, MaskingBudgetExceeded)


def request_mask(body: dict[str, Any]) -> None:
    """Request masking of any JSON object keeps it a JSON object."""
    masked, _ = mask_request_body(MASKER, body)
    assert isinstance(masked, dict)
    orjson.dumps(masked)


# -- JWT path ------------------------------------------------------------------------------------

JWT_ALLOWED: tuple[type[BaseException], ...] = (Rejection,)
_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ISSUER = "https://issuer.fuzz"


def _b64(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


async def _jwks() -> dict[str, Any]:
    numbers = _KEY.public_key().public_numbers()
    return {
        "keys": [
            {
                "kty": "RSA",
                "kid": "k1",
                "use": "sig",
                "alg": "RS256",
                "n": _b64(numbers.n),
                "e": _b64(numbers.e),
            }
        ]
    }


def _verifier() -> TokenVerifier:
    cache = JwksCache(_jwks, ttl=600, refetch_interval=30)
    return TokenVerifier([TrustedIssuer("oidc", ISSUER, ("skillwarden",), cache)], ("RS256", "ES256"), 30.0)


VERIFIER = _verifier()
_LOOP = asyncio.new_event_loop()


def _segment(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(claims: dict[str, Any], headers: dict[str, Any]) -> str:
    """A token really signed by the trusted key, whatever its claims' types (so fuzzing reaches the
    claim checks too; PyJWT's encoder would refuse a non-string `iss` or `kid`)."""
    header = {"alg": "RS256", "typ": "JWT", "kid": "k1", **headers}
    signing_input = _segment(json.dumps(header).encode()) + "." + _segment(json.dumps(claims).encode())
    signature = _KEY.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + _segment(signature)


def jwt_path(headers: dict[str, str]) -> None:
    token = presented_token(headers)
    if token is None:
        return
    identity = _LOOP.run_until_complete(VERIFIER.verify(token))
    assert identity.iss == ISSUER and all(isinstance(g, str) for g in identity.groups)


def now() -> int:
    return int(time.time())


# -- admission: pod injection ---------------------------------------------------------------------

ADMISSION_ALLOWED: tuple[type[BaseException], ...] = (injection.InjectionDenied,)
SETTINGS = injection.InjectionSettings()


def admission(pod: Any, namespace: str | None) -> None:
    outcome = injection.plan(pod, namespace, SETTINGS)
    assert outcome.action in {"inject", "unchanged", "skip"}
    json.dumps(outcome.patch)
    if outcome.action == "inject":
        # Whatever came in, the stored pod has exactly one real sidecar and the key stays with it.
        containers = outcome.pod["spec"].get("containers", []) + (
            outcome.pod["spec"].get("initContainers") or []
        )
        assert [c["name"] for c in containers].count(injection.SIDECAR) == 1
        assert injection.plan(outcome.pod, namespace, SETTINGS).patch == []  # idempotent


# -- policy compiler ------------------------------------------------------------------------------

POLICY_ALLOWED: tuple[type[BaseException], ...] = ()


def policy_compile(policy: dict[str, Any]) -> None:
    errors = validate_policy(policy)
    assert isinstance(errors, list) and all(isinstance(e, str) for e in errors)
    bundle = build_bundle("finance", [policy])
    assert bool(bundle.invalid) == bool(errors), (errors, bundle.invalid)
    assert bundle.data[:2] == b"\x1f\x8b" and bundle.revision.startswith("sha256:")


def run(target: Callable[..., Any], allowed: tuple[type[BaseException], ...], *args: Any) -> None:
    try:
        target(*args)
    except allowed:
        pass


# -- one byte format for every target (atheris harness, seeds, and replaying a crash file) -------------

NAMESPACES = ("finance", "kube-system", "", None)
METHODS = ("POST", "GET", "DELETE", "PUT")


def _json_of(data: bytes) -> Any:
    text = data.decode("utf-8", "replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def from_bytes(target: str, data: bytes) -> None:
    """Run `target` on raw fuzzer bytes; raises only what the target may not raise."""
    head, rest = (data[0], data[1:]) if data else (0, b"")
    if target == "sse":
        step = head + 1
        run(sse_relay, SSE_ALLOWED, rest, list(range(step, len(rest), step))[:32])
    elif target == "request":
        path, _, body = rest.partition(b"\n")
        run(request_parse, REQUEST_ALLOWED, METHODS[head % 4], path.decode("utf-8", "replace"), body)
    elif target == "mask":
        body = _json_of(rest)
        if isinstance(body, dict):
            run(request_mask, MASK_ALLOWED, body)
    elif target == "jwt":
        if head % 2:
            claims_raw, _, header_raw = rest.partition(b"\n")
            claims, header = _json_of(claims_raw), _json_of(header_raw)
            token = signed(
                claims if isinstance(claims, dict) else {"iss": ISSUER, "x": claims},
                header if isinstance(header, dict) else {},
            )
        else:
            token = rest.decode("latin-1")
        name = "Authorization" if head % 4 >= 2 else "x-api-key"
        run(jwt_path, JWT_ALLOWED, {name: ("Bearer " + token) if name == "Authorization" else token})
    elif target == "admission":
        run(admission, ADMISSION_ALLOWED, _json_of(rest), NAMESPACES[head % 4])
    elif target == "policy":
        run(
            policy_compile,
            POLICY_ALLOWED,
            {
                "apiVersion": "skillwarden.io/v1alpha1",
                "kind": "SkillPolicy",
                "metadata": {"name": "fuzz", "namespace": "finance"},
                "spec": _json_of(rest),
            },
        )
    else:
        raise ValueError(f"unknown target {target}")


TARGET_NAMES = ("sse", "request", "mask", "jwt", "admission", "policy")
