"""Decision input built from a parsed request, and how decisions are read (fail closed)."""

from __future__ import annotations

from typing import Any

import pytest

from skillwarden_sidecar.errors import Rejection
from skillwarden_sidecar.pipeline import Exchange, Identity, Workload
from skillwarden_sidecar.policy import build_input, denial, parse_decision
from skillwarden_sidecar.routes import resolve

WORKLOAD = Workload("finance", "report-7f9c", "report-bot")


def exchange(body: dict[str, Any] | None, path: str = "/v1/messages", method: str = "POST") -> Exchange:
    ex = Exchange(request_id="r", received_at=0.0, method=method, path=path, query="", operation="",
                  workload=WORKLOAD, body=body)
    ex.operation = resolve(method, path).operation
    return ex


def test_input_has_every_contract_field() -> None:
    body = {
        "model": "claude-sonnet-4-6", "max_tokens": 1024, "stream": True,
        "system": [{"type": "text", "text": "You are the finance bot."}],
        "container": {"skills": [{"type": "anthropic", "skill_id": "xlsx"},
                                 {"type": "custom", "skill_id": "skill_01X", "version": "3"}]},
        "tools": [{"type": "code_execution_20250825", "name": "code_execution"},
                  {"name": "get_weather", "input_schema": {}}],
        "messages": [
            {"role": "user", "content": "Export the customer list"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "get_weather",
                                               "input": {"secret": "not prompt text"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                          "content": [{"type": "text", "text": "12 degrees"}]},
                                         {"type": "text", "text": "thanks"}]},
        ],
    }
    ex = exchange(body)
    ex.identity = Identity("oidc", "alice", "https://login", ("finance-leads",), "a@x")
    got = build_input(ex, resolve("POST", "/v1/messages"))
    assert got["identity"] == {"kind": "oidc", "sub": "alice", "iss": "https://login",
                               "groups": ["finance-leads"], "email": "a@x"}
    assert got["workload"] == {"namespace": "finance", "pod": "report-7f9c", "service_account": "report-bot"}
    request = got["request"]
    assert request["operation"] == "messages.create" and request["method"] == "POST"
    assert request["model"] == "claude-sonnet-4-6" and request["stream"] is True
    assert request["max_tokens"] == 1024
    assert request["skills"] == [{"type": "anthropic", "skill_id": "xlsx", "version": "latest"},
                                 {"type": "custom", "skill_id": "skill_01X", "version": "3"}]
    assert request["tools"] == ["code_execution", "get_weather"]
    assert request["prompt_text"] == "You are the finance bot.\nExport the customer list\n12 degrees\nthanks"
    assert request["prompt_chars"] == len(request["prompt_text"])
    assert got["approval"] == {"id": "", "state": ""}


def test_hostile_shapes_do_not_crash_and_are_neutral() -> None:
    body = {"model": 7, "max_tokens": True, "stream": "yes", "container": "container_abc",
            "tools": ["x", {"name": 5}], "system": {"weird": 1},
            "messages": [None, {"content": 12}, {"content": [None, {"type": "text", "text": 3}]}]}
    got = build_input(exchange(body), resolve("POST", "/v1/messages"))["request"]
    assert got["model"] == "" and got["max_tokens"] == 0 and got["stream"] is False
    assert got["skills"] == [] and got["tools"] == [] and got["prompt_text"] == ""


def test_skills_routes_put_the_path_skill_in_the_input() -> None:
    ex = exchange(None, "/v1/skills/skill_01AbC", "DELETE")
    got = build_input(ex, resolve("DELETE", "/v1/skills/skill_01AbC"))["request"]
    assert got["operation"] == "skills.delete"
    assert got["skills"] == [{"type": "custom", "skill_id": "skill_01AbC", "version": "latest"}]


@pytest.mark.parametrize("result", [None, {}, {"action": "maybe"}, [], "allow", {"action": None}])
def test_no_decision_fails_closed(result: Any) -> None:
    with pytest.raises(Rejection) as refused:
        parse_decision(result)
    assert refused.value.status == 503 and "request denied" in refused.value.message


def test_denial_names_policy_rule_and_message() -> None:
    decision = parse_decision({"action": "deny", "policy": "finance/p", "rule": "no-pptx",
                               "message": "Slides leave the perimeter",
                               "reasons": ["rule finance/p/no-pptx"]})
    rejection = denial(decision)
    assert rejection.status == 403 and rejection.error_type == "permission_error"
    assert rejection.message == ("denied by skillwarden (policy finance/p, rule no-pptx): "
                                 "Slides leave the perimeter")
    assert b'"rule":"no-pptx"' in rejection.body()
