"""Decision cache and prompt pattern table: what may be reused, for how long, and what never is."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from skillwarden_operator.compiler import prompt_pattern_table
from skillwarden_sidecar.decisions import Decider, DecisionCache, Outcome, cache_key, reusable
from skillwarden_sidecar.pipeline import Decision
from skillwarden_sidecar.prompt_patterns import UNKNOWN, compile_table

TABLE = prompt_pattern_table(["(?i)customer (list|export)", "-----BEGIN [A-Z ]*PRIVATE KEY-----", "payroll"])
FP = TABLE["fingerprint"]


def policy_input(text: str = "hello", *, sub: str = "ann",
                 approval: dict[str, str] | None = None) -> dict[str, Any]:
    return {"identity": {"kind": "oidc", "sub": sub, "iss": "https://idp", "groups": ["g"], "email": ""},
            "workload": {"namespace": "finance", "pod": "p", "service_account": "bot"},
            "request": {"method": "POST", "path": "/v1/messages", "operation": "messages.create",
                        "model": "claude-sonnet-4-6", "stream": False, "max_tokens": 64, "skills": [],
                        "tools": [], "prompt_text": text, "prompt_chars": len(text)},
            "approval": approval or {"id": "", "state": ""}}


def decision(action: str = "allow", revision: str = "rev-1", matched_in: str = "sidecar",
             fingerprint: str = FP) -> Decision:
    raw = {"action": action, "bundle_revision": revision,
           "prompt_patterns": {"fingerprint": fingerprint, "matched_in": matched_in}}
    return Decision(action=action, reasons=(), policy="finance/p", rule=None, message="", masking={},
                    recording={}, approval={}, bundle_revision=revision, raw=raw)


def test_table_matches_every_pattern_in_one_pass() -> None:
    table = compile_table(TABLE)
    assert table.fingerprint == FP and table.count == 3
    assert table.match("please send the CUSTOMER EXPORT and payroll") == ["0", "2"]
    assert table.match("-----BEGIN RSA PRIVATE KEY-----") == ["1"]
    assert table.match("nothing to see") == []
    assert UNKNOWN.match("payroll") == []  # before the first fetch OPA matches instead


def test_empty_table_matches_nothing() -> None:
    empty = compile_table(prompt_pattern_table([]))
    assert empty.count == 0 and empty.match("payroll") == []


@pytest.mark.parametrize("document", [None, [], {"fingerprint": "", "patterns": []},
                                      {"fingerprint": "sha256:x", "patterns": "payroll"},
                                      {"fingerprint": "sha256:x", "patterns": [1]},
                                      {"fingerprint": "sha256:x", "patterns": ["(unclosed"]}])
def test_malformed_table_is_refused(document: Any) -> None:
    with pytest.raises(ValueError):
        compile_table(document)


def test_key_ignores_prompt_text_but_not_identity_or_matches() -> None:
    a, b = policy_input("first prompt"), policy_input("a different, longer prompt")
    for item in (a, b):
        item["request"]["prompt_matches"] = {"fingerprint": FP, "ids": []}
    assert cache_key(a) == cache_key(b)
    other_caller = policy_input("first prompt", sub="bob")
    other_caller["request"]["prompt_matches"] = {"fingerprint": FP, "ids": []}
    assert cache_key(other_caller) != cache_key(a)
    matched = policy_input("first prompt")
    matched["request"]["prompt_matches"] = {"fingerprint": FP, "ids": ["2"]}
    assert cache_key(matched) != cache_key(a)


def test_inputs_carrying_an_approval_are_never_cached() -> None:
    assert cache_key(policy_input(approval={"id": "skillapproval-1", "state": "Approved"})) is None


def test_only_sidecar_matched_allow_or_deny_is_reusable() -> None:
    assert reusable(decision("allow"), FP) and reusable(decision("deny"), FP)
    assert not reusable(decision("require_approval"), FP)
    assert not reusable(decision(matched_in="policy-engine"), FP)  # OPA read the prompt text
    assert not reusable(decision(fingerprint="sha256:other"), FP)


def test_cache_expires_and_is_dropped_on_a_new_revision() -> None:
    cache = DecisionCache(ttl=1.0)
    cache.observe_revision("rev-1")
    cache.put(b"k", decision(), now=100.0)
    assert cache.get(b"k", now=100.9) is not None
    assert cache.get(b"k", now=101.0) is None  # expired exactly at the TTL
    cache.put(b"k", decision(), now=200.0)
    cache.observe_revision("rev-2")
    assert cache.get(b"k", now=200.1) is None
    cache.put(b"k", decision(revision="rev-1"), now=200.2)  # an answer from the old bundle
    assert len(cache) == 0


def test_cache_is_bounded() -> None:
    cache = DecisionCache(ttl=10.0, size=2)
    cache.observe_revision("rev-1")
    for name in (b"a", b"b", b"c"):
        cache.put(name, decision(), now=0.0)
    assert cache.get(b"a", now=1.0) is None and cache.get(b"c", now=1.0) is not None


class FakeOpa:
    """Stands in for PolicyClient (one function under test: the Decider's bookkeeping)."""

    def __init__(self, answers: list[Decision]) -> None:
        self.answers = answers
        self.inputs: list[dict[str, Any]] = []
        self.fetches = 0

    async def decide(self, policy_input: dict[str, Any]) -> tuple[Decision, float]:
        self.inputs.append(policy_input)
        return self.answers.pop(0), 0.001

    async def fetch_data(self, path: str) -> Any:
        self.fetches += 1
        return TABLE


async def test_decider_learns_the_table_then_reuses_answers() -> None:
    now = [0.0]
    opa = FakeOpa([decision(fingerprint=FP, matched_in="policy-engine"), decision(), decision("deny")])
    decider = Decider(opa, "skillwarden/policies/prompt_patterns", DecisionCache(1.0),  # type: ignore[arg-type]
                      clock=lambda: now[0])
    first = await decider.decide(policy_input("hello payroll"))
    assert not first.cached and opa.inputs[0]["request"]["prompt_matches"] == {"fingerprint": "", "ids": []}
    assert decider._refresh is not None
    await decider._refresh
    assert opa.fetches == 1 and decider.patterns.fingerprint == FP

    second = await decider.decide(policy_input("hello"))  # asked: nothing cached yet
    assert not second.cached and opa.inputs[1]["request"]["prompt_matches"] == {"fingerprint": FP, "ids": []}
    third = await decider.decide(policy_input("hi there, other words"))
    assert third.cached and third.decision.action == "allow" and len(opa.inputs) == 2

    payroll = await decider.decide(policy_input("the payroll"))  # another shape: matched id 2
    assert not payroll.cached and payroll.decision.action == "deny"
    assert opa.inputs[2]["request"]["prompt_matches"]["ids"] == ["2"]
    await decider.close()


class SlowOpa(FakeOpa):
    """Answers after a pause, so concurrent callers overlap; can fail its first call."""

    def __init__(self, answers: list[Decision], fail_first: bool = False) -> None:
        super().__init__(answers)
        self.fail_first = fail_first

    async def decide(self, policy_input: dict[str, Any]) -> tuple[Decision, float]:
        self.inputs.append(policy_input)
        await asyncio.sleep(0.05)
        if self.fail_first and len(self.inputs) == 1:
            raise RuntimeError("policy engine did not answer in time")
        return self.answers.pop(0), 0.05


async def learned(opa: FakeOpa) -> Decider:
    decider = Decider(opa, "skillwarden/policies/prompt_patterns", DecisionCache(1.0))  # type: ignore[arg-type]
    await decider.refresh_patterns()
    assert decider.patterns.fingerprint == FP
    return decider


async def test_a_burst_of_one_shape_asks_opa_once() -> None:
    opa = SlowOpa([decision()])
    decider = await learned(opa)
    outcomes = await asyncio.gather(*(decider.decide(policy_input(f"prompt {n}")) for n in range(16)))
    assert len(opa.inputs) == 1
    assert sum(not o.cached for o in outcomes) == 1 and all(o.decision.action == "allow" for o in outcomes)


async def test_waiters_ask_themselves_when_the_shared_call_fails_or_read_the_prompt() -> None:
    failing = SlowOpa([decision(), decision()], fail_first=True)
    decider = await learned(failing)
    results = await asyncio.gather(*(decider.decide(policy_input(f"p{n}")) for n in range(3)),
                                   return_exceptions=True)
    assert isinstance(results[0], RuntimeError)  # the first asker's own failure
    assert all(isinstance(r, Outcome) for r in results[1:]) and len(failing.inputs) == 3

    read_prompt = SlowOpa([decision(matched_in="policy-engine")] * 3)
    decider = await learned(read_prompt)
    outcomes = await asyncio.gather(*(decider.decide(policy_input(f"p{n}")) for n in range(3)))
    assert len(read_prompt.inputs) == 3 and not any(o.cached for o in outcomes)
