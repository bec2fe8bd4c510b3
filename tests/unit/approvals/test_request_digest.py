"""The digest an approval is bound to changes with every value that matters, and only with those."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from skillwarden_sidecar.request_digest import request_digest

IDENTITY = {"kind": "oidc", "sub": "requester", "iss": "https://issuer", "groups": ["finance-analysts"]}
WORKLOAD = {"namespace": "finance", "pod": "report-7f9c", "service_account": "report-bot"}
BODY: dict[str, Any] = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 1024,
    "messages": [{"role": "user", "content": "customer export for Q3"}],
}


def digest(body: Any = BODY, **overrides: Any) -> str:
    args: dict[str, Any] = {
        "method": "POST",
        "path": "/v1/messages",
        "body": body,
        "identity": IDENTITY,
        "workload": WORKLOAD,
        **overrides,
    }
    return request_digest(**args)


def test_format_and_determinism() -> None:
    value = digest()
    assert value.startswith("sha256:") and len(value) == 71 and value == digest()


def test_key_order_and_whitespace_of_the_wire_body_do_not_matter() -> None:
    reordered = orjson.loads(
        b'{"messages":[{"content":"customer export for Q3","role":"user"}],'
        b'  "max_tokens":1024,"model":"claude-sonnet-4-6"}'
    )
    assert digest(reordered) == digest()
    assert digest(method="post") == digest()


@pytest.mark.parametrize(
    "changed",
    [
        {"body": {**BODY, "messages": [{"role": "user", "content": "customer export for Q3 "}]}},
        {"body": {**BODY, "max_tokens": 1025}},
        {"body": {**BODY, "model": "claude-opus-4-6"}},
        {"body": {**BODY, "stream": True}},
        {"path": "/v1/messages/count_tokens"},
        {"identity": {**IDENTITY, "sub": "someone-else"}},
        {"identity": {**IDENTITY, "iss": "https://other-issuer"}},
        {"workload": {**WORKLOAD, "service_account": "other-bot"}},
        {"workload": {**WORKLOAD, "namespace": "marketing"}},
    ],
)
def test_anything_that_matters_changes_the_digest(changed: dict[str, Any]) -> None:
    assert digest(**changed) != digest()


def test_what_does_not_identify_the_request_is_left_out() -> None:
    # Group membership and the pod's name change without the request changing.
    assert digest(identity={**IDENTITY, "groups": []}) == digest()
    assert digest(workload={**WORKLOAD, "pod": "report-other"}) == digest()


@pytest.mark.parametrize("bad", [float("nan"), 2**64])
def test_values_outside_canonical_json_are_refused(bad: Any) -> None:
    with pytest.raises(ValueError):
        digest({**BODY, "temperature": bad})
