"""Status written to SkillPolicies after a namespace compile."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

from skillwarden_operator.bundle import build_bundle
from skillwarden_operator.config import ConfigError, OperatorConfig, add_arguments, from_args
from skillwarden_operator.policy_status import needs_update, policy_status

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def finance(generation: int = 2) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((EXAMPLES / "skillpolicy-finance.yaml").read_text())
    loaded["metadata"]["generation"] = generation
    return loaded


def test_ready_status() -> None:
    policy = finance()
    bundle = build_bundle("finance", [policy])
    status = policy_status(policy, bundle, NOW)
    assert status["observedGeneration"] == 2
    assert status["bundleRevision"] == bundle.revision
    condition = status["conditions"][0]
    assert (condition["type"], condition["status"], condition["reason"]) == ("Ready", "True", "Compiled")
    assert condition["lastTransitionTime"] == "2026-01-02T03:04:05Z"
    assert needs_update(policy, status)
    policy["status"] = status
    later = policy_status(policy, bundle, NOW + dt.timedelta(hours=1))
    assert later == status  # same state: no new transition time, no patch
    assert not needs_update(policy, later)


def test_invalid_policy_and_its_neighbours() -> None:
    good = finance()
    bad = copy.deepcopy(good)
    bad["metadata"]["name"] = "broken"
    bad["spec"]["rules"][0]["when"]["promptMatches"] = ["(?P<x"]
    bundle = build_bundle("finance", [good, bad])
    broken = policy_status(bad, bundle, NOW)["conditions"][0]
    assert (broken["status"], broken["reason"]) == ("False", "Invalid")
    assert broken["message"].startswith("spec.rules[0].when.promptMatches[0]: not a valid RE2 pattern")
    assert "denies every request" in broken["message"]
    neighbour = policy_status(good, bundle, NOW)["conditions"][0]
    assert (neighbour["status"], neighbour["reason"]) == ("False", "NamespaceInvalid")
    assert "finance/broken" in neighbour["message"]


def test_terminating_namespace() -> None:
    policy = finance()
    condition = policy_status(policy, build_bundle("finance", []), NOW, "terminating")["conditions"][0]
    assert (condition["status"], condition["reason"]) == ("False", "NamespaceTerminating")


def test_config_flags_env_and_errors() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--bundle-port", "9000", "--admission", "false"])
    config = from_args(args, {"SKILLWARDEN_OPERATOR_BUNDLE_PORT": "1",
                              "SKILLWARDEN_OPERATOR_NAMESPACES": "a, b",
                              "SKILLWARDEN_OPERATOR_MIN_RETENTION_DAYS": "30"})
    assert config == OperatorConfig(bundle_port=9000, admission=False, namespaces=("a", "b"),
                                    min_retention_days=30)
    with pytest.raises(ConfigError, match="--bundle-port"):
        from_args(parser.parse_args(["--bundle-port", "x"]), {})
    with pytest.raises(ConfigError, match="at least 1"):
        from_args(parser.parse_args(["--min-retention-days", "0"]), {})
