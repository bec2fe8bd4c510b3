"""reconcile_namespace against a fake Kubernetes (one function's logic; the real API server
version of each case is in tests/integration/operator)."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import threading
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml

from skillwarden_operator.config import OperatorConfig
from skillwarden_operator.policy_handlers import reconcile_namespace
from skillwarden_operator.state import OperatorState

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def finance() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((EXAMPLES / "skillpolicy-finance.yaml").read_text())
    loaded["metadata"]["generation"] = 1
    return loaded


class FakeKube:
    def __init__(self, policies: list[dict[str, Any]]) -> None:
        self.policies = policies
        self.state = "active"
        self.lists = 0
        self.patched: dict[str, dict[str, Any]] = {}
        self.fail_list: Exception | None = None
        self.gone_on_patch: set[str] = set()
        self._lock = threading.Lock()

    def namespace_state(self, namespace: str) -> str:
        return self.state

    def list_policies(self, namespace: str) -> list[dict[str, Any]]:
        if self.fail_list is not None:
            raise self.fail_list
        with self._lock:
            self.lists += 1
        return copy.deepcopy(self.policies)

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> bool:
        if name in self.gone_on_patch:
            return False
        self.patched[name] = status
        return True


def make_state(kube: FakeKube) -> OperatorState:
    return OperatorState(config=OperatorConfig(), kube=kube)  # type: ignore[arg-type]


async def test_concurrent_changes_coalesce_and_the_last_list_wins() -> None:
    kube = FakeKube([finance()])
    state = make_state(kube)
    results = await asyncio.gather(*(reconcile_namespace(state, "finance", NOW) for _ in range(40)))
    assert kube.lists < 5  # 40 change events, a handful of compilations
    served = state.store.get("finance")
    assert served is not None and all(r is not None and r.revision == served.revision for r in results)
    assert kube.patched["finance-reporting"]["bundleRevision"] == served.revision


async def test_policy_deleted_while_compiling_is_not_an_error() -> None:
    kube = FakeKube([finance()])
    kube.gone_on_patch.add("finance-reporting")  # deleted between list and status patch
    state = make_state(kube)
    bundle = await reconcile_namespace(state, "finance", NOW)
    assert bundle is not None and bundle.included == ("finance/finance-reporting",)
    kube.policies = []
    emptied = await reconcile_namespace(state, "finance", NOW)
    assert emptied is not None and emptied.included == () and emptied.revision != bundle.revision
    assert emptied.document["default_action"] == "deny"


async def test_objects_being_deleted_are_compiled_out() -> None:
    doomed = finance()
    doomed["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    kube = FakeKube([doomed])
    bundle = await reconcile_namespace(make_state(kube), "finance", NOW)
    assert bundle is not None and bundle.included == ()


async def test_api_server_down_keeps_the_current_bundle_and_retries() -> None:
    kube = FakeKube([finance()])
    state = make_state(kube)
    first = await reconcile_namespace(state, "finance", NOW)
    kube.fail_list = ConnectionError("connection refused")
    with pytest.raises(kopf.TemporaryError, match="cannot list SkillPolicies of finance"):
        await reconcile_namespace(state, "finance", NOW)
    assert state.store.get("finance") == first


async def test_terminating_then_gone_namespace() -> None:
    kube = FakeKube([finance()])
    state = make_state(kube)
    await reconcile_namespace(state, "finance", NOW)
    kube.state = "terminating"
    denying = await reconcile_namespace(state, "finance", NOW)
    assert denying is not None and denying.included == ()
    assert kube.patched["finance-reporting"]["conditions"][0]["reason"] == "NamespaceTerminating"
    assert "finance" in state.terminating
    kube.state = "gone"
    assert await reconcile_namespace(state, "finance", NOW) is None
    assert state.store.get("finance") is None
    assert not state.metrics.known("finance")
