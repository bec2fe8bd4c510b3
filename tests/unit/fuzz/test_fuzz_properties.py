"""Property-based fuzzing (hypothesis) of every parser that sees untrusted input. Each target may
only succeed or raise its documented error types (see fuzz/fuzz_targets.py); any other exception
fails the test with the shrunk input. Example counts are bounded so the whole file runs in CI in
well under a minute; `fuzz/run.py` runs the same targets coverage-guided (atheris) for longer."""

from __future__ import annotations

import json
from typing import Any

import fuzz_targets as ft
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FAST = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=False
)

json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=30,
)

# -- SSE ---------------------------------------------------------------------------------------------

SSE_PIECES = [
    b"event: ",
    b"data: ",
    b"id: ",
    b"retry: ",
    b": comment",
    b"\n",
    b"\r\n",
    b"\r",
    b"\n\n",
    b"message_start",
    b"content_block_start",
    b"content_block_delta",
    b"content_block_stop",
    b"message_delta",
    b"message_stop",
    b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"',
    b'{"type":"input_json_delta","partial_json":"',
    b'{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}',
    b'{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"t",'
    b'"name":"x","input":{}}}',
    b'"}}',
    b"536-22-8726",
    b"4111 1111 1111 1111",
    b"bob@example.com",
    b"\xff\xfe",
    b"\xe2\x82",
    b"\x00",
    b"\\u00",
    b"\\ud83d",
    b"{",
    b"}",
    b"[",
    b'"',
    b"index",
    b"-1",
    b"999999999999999999999",
]


def sse_streams() -> st.SearchStrategy[bytes]:
    structured = st.lists(st.sampled_from(SSE_PIECES) | st.binary(max_size=16), max_size=60).map(b"".join)
    return structured | st.binary(max_size=2000)


@FAST
@given(sse_streams(), st.lists(st.integers(0, 4000), max_size=8))
def test_sse_relay_raises_only_sse_errors(data: bytes, cuts: list[int]) -> None:
    ft.run(ft.sse_relay, ft.SSE_ALLOWED, data, cuts)


# -- request parser and decision input -----------------------------------------------------------

ROUTE_PATHS = st.sampled_from(
    [
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/models",
        "/v1/models/x",
        "/v1/skills",
        "/v1/skills/skill_01",
        "/v1/skills/s/versions/1",
    ]
)
PATHS = (
    ROUTE_PATHS
    | st.text(max_size=80)
    | st.lists(
        st.sampled_from(["v1", "messages", "skills", "..", ".", "", "%2e", "%2F", "x?y", "\x00", "ü"]),
        max_size=6,
    ).map(lambda parts: "/" + "/".join(parts))
)
BODY_KEYS = [
    "model",
    "max_tokens",
    "stream",
    "system",
    "messages",
    "container",
    "tools",
    "metadata",
    "role",
    "content",
    "type",
    "text",
    "tool_result",
    "skills",
    "skill_id",
    "version",
    "name",
]
body_values = st.recursive(
    json_leaf | st.sampled_from(BODY_KEYS),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(BODY_KEYS) | st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=40,
)


@FAST
@given(
    st.sampled_from(["POST", "GET", "DELETE", "PUT", "post", ""]),
    PATHS,
    body_values.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=200),
)
def test_request_parser_gives_a_clean_rejection_or_valid_input(method: str, path: str, body: bytes) -> None:
    ft.run(ft.request_parse, ft.REQUEST_ALLOWED, method, path, body)


@FAST
@given(st.dictionaries(st.sampled_from(BODY_KEYS), body_values, max_size=6))
def test_request_masking_keeps_any_body_a_json_object(body: dict[str, Any]) -> None:
    ft.run(ft.request_mask, ft.MASK_ALLOWED, body)


# -- JWT path --------------------------------------------------------------------------------------

claims = st.fixed_dictionaries(
    {},
    optional={
        "iss": st.sampled_from([ft.ISSUER, "https://evil", ""]) | json_leaf,
        "aud": st.sampled_from(["skillwarden", "other"])
        | st.lists(st.text(max_size=8), max_size=3)
        | json_leaf,
        "exp": st.integers(-10, 10**6).map(lambda d: ft.now() + d - 1000) | json_leaf,
        "iat": st.integers(-1000, 1000).map(lambda d: ft.now() + d) | json_leaf,
        "nbf": st.integers(-1000, 1000).map(lambda d: ft.now() + d) | json_leaf,
        "sub": json_leaf,
        "groups": json_values,
        "email": json_values,
        "kubernetes.io": json_values,
    },
)
jwt_headers = st.fixed_dictionaries(
    {},
    optional={
        "alg": st.sampled_from(["none", "HS256", "RS256", "ES256"]),
        "kid": json_leaf,
        "typ": json_leaf,
        "crit": json_values,
    },
)


def tokens() -> st.SearchStrategy[str]:
    forged = st.tuples(st.binary(max_size=60), st.binary(max_size=120), st.binary(max_size=40)).map(
        lambda parts: ".".join(ft.base64.urlsafe_b64encode(p).rstrip(b"=").decode() for p in parts)
    )
    real = st.tuples(claims, jwt_headers.filter(lambda h: "alg" not in h)).map(lambda t: ft.signed(*t))
    return (
        real
        | forged
        | st.text(max_size=60)
        | st.builds(lambda a, b: a + "." + b + ".", st.text(max_size=20), st.text(max_size=20))
    )


@FAST
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "Authorization": st.one_of(tokens().map(lambda t: "Bearer " + t), st.text(max_size=30)),
            "x-api-key": tokens(),
        },
    )
)
def test_jwt_path_raises_only_its_own_rejection(headers: dict[str, str]) -> None:
    ft.run(ft.jwt_path, ft.JWT_ALLOWED, headers)


# -- admission ---------------------------------------------------------------------------------------

ANNOTATION_KEYS = [
    "skillwarden.io/inject",
    "skillwarden.io/port",
    "skillwarden.io/injected",
    "skillwarden.io/cpu",
    "skillwarden.io/memory",
    "skillwarden.io/provider-key-secret",
    "skillwarden.io/record",
    "other.io/x",
]
container = st.fixed_dictionaries(
    {"name": st.sampled_from(["app", "skillwarden", "opa", "w"]) | st.text(max_size=6)},
    optional={
        "image": json_leaf,
        "env": json_values,
        "envFrom": json_values,
        "ports": st.lists(
            st.fixed_dictionaries({"containerPort": st.integers(0, 70000) | json_leaf}), max_size=3
        ),
        "volumeMounts": json_values,
        "securityContext": json_values,
    },
)
pods = (
    st.fixed_dictionaries(
        {},
        optional={
            "metadata": st.fixed_dictionaries(
                {},
                optional={
                    "annotations": st.dictionaries(
                        st.sampled_from(ANNOTATION_KEYS),
                        st.sampled_from(["true", "false", "8790", "100m", "{}", "x"]) | st.text(max_size=10),
                        max_size=4,
                    )
                    | json_values,
                    "labels": st.dictionaries(
                        st.sampled_from(ANNOTATION_KEYS), st.sampled_from(["true", "false"]), max_size=2
                    )
                    | json_values,
                    "namespace": json_leaf,
                    "name": json_leaf,
                },
            ),
            "spec": st.fixed_dictionaries(
                {},
                optional={
                    "containers": st.lists(container, max_size=3) | json_values,
                    "initContainers": st.lists(container, max_size=2) | json_values,
                    "volumes": json_values,
                    "shareProcessNamespace": json_leaf,
                    "serviceAccountName": json_leaf,
                },
            )
            | json_values,
        },
    )
    | json_values
)


@FAST
@given(pods, st.sampled_from(["finance", "kube-system", "", None]))
def test_admission_plan_raises_only_injection_denied(pod: Any, namespace: str | None) -> None:
    ft.run(ft.admission, ft.ADMISSION_ALLOWED, pod, namespace)


# -- policy compiler --------------------------------------------------------------------------------

skills = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["anthropic", "custom", "x"]) | json_leaf,
            "id": st.sampled_from(["xlsx", "pdf", "*"]) | json_leaf,
        }
    ),
    max_size=3,
)
subject = st.fixed_dictionaries(
    {"name": st.sampled_from(["bot", "leads"]) | json_leaf},
    optional={
        "serviceAccounts": st.lists(st.sampled_from(["report-bot"]) | st.text(max_size=8), max_size=2)
        | json_leaf,
        "groups": st.lists(st.text(max_size=8), max_size=2) | json_leaf,
        "skills": skills | json_leaf,
        "models": st.lists(st.sampled_from(["claude-*", "*", "["]) | st.text(max_size=8), max_size=2),
        "tools": st.lists(st.text(max_size=8), max_size=2),
        "maxTokens": st.integers(-5, 10**9) | json_leaf,
        "operations": st.lists(st.sampled_from(["messages.create", "skills.*", "x"]), max_size=2),
    },
)
when = st.fixed_dictionaries(
    {},
    optional={
        "promptMatches": st.lists(
            st.sampled_from(["(?i)x", "(a+)+", "[", "\\", "(?P<n>x)", ".*", "a{1001}"])
            | st.text(max_size=10),
            max_size=2,
        ),
        "skills": skills,
        "tools": st.lists(st.text(max_size=6), max_size=2),
        "models": st.lists(st.text(max_size=6), max_size=2),
        "maxTokensAbove": st.integers(-5, 10**7) | json_leaf,
    },
)
rule = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["r1", "r2"]) | json_leaf,
        "action": st.sampled_from(["deny", "requireApproval", "allow", "x"]),
    },
    optional={"message": json_leaf, "when": when | json_leaf},
)
spec = st.fixed_dictionaries(
    {},
    optional={
        "defaultAction": st.sampled_from(["deny", "allow", "requireApproval", "x"]) | json_leaf,
        "subjects": st.lists(subject, max_size=3) | json_leaf,
        "rules": st.lists(rule, max_size=3) | json_leaf,
        "masking": st.fixed_dictionaries(
            {},
            optional={
                "upstream": st.lists(st.sampled_from(["US_SSN", "EMAIL_ADDRESS", "NOPE"]), max_size=2),
                "client": st.lists(st.sampled_from(["US_SSN", "CREDIT_CARD"]), max_size=2),
                "operators": st.dictionaries(
                    st.sampled_from(["US_SSN", "EMAIL_ADDRESS"]),
                    st.sampled_from(["hmac", "partial", "redact", "x"]),
                    max_size=2,
                ),
                "custom": st.lists(
                    st.fixed_dictionaries(
                        {
                            "name": st.text(max_size=8),
                            "pattern": st.sampled_from(["EMP-[0-9]{6}", "", ".*", "("]) | st.text(max_size=8),
                        }
                    ),
                    max_size=2,
                ),
            },
        )
        | json_leaf,
        "recording": st.fixed_dictionaries(
            {},
            optional={
                "bucket": st.text(max_size=10),
                "prefix": st.text(max_size=10),
                "retentionDays": st.integers(-1, 10**5) | json_leaf,
                "mode": st.sampled_from(["COMPLIANCE", "x"]),
            },
        ),
        "approval": st.fixed_dictionaries(
            {},
            optional={
                "approvers": st.fixed_dictionaries(
                    {}, optional={"groups": st.lists(st.text(max_size=6), max_size=2), "users": json_values}
                ),
                "required": st.integers(-2, 20) | json_leaf,
                "ttl": st.sampled_from(["30m", "1h", "0s", "x", "99999h"]),
                "holdSeconds": st.integers(-5, 10**6) | json_leaf,
            },
        ),
    },
)
policies = st.fixed_dictionaries(
    {
        "apiVersion": st.sampled_from(["skillwarden.io/v1alpha1"]),
        "kind": st.sampled_from(["SkillPolicy"]),
        "metadata": st.fixed_dictionaries(
            {"name": st.sampled_from(["p1", "p2"]) | st.text(max_size=8), "namespace": st.just("finance")}
        ),
        "spec": spec | json_values,
    }
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies)
def test_policy_compiler_validates_or_compiles_and_never_crashes(policy: dict[str, Any]) -> None:
    ft.run(ft.policy_compile, ft.POLICY_ALLOWED, policy)
