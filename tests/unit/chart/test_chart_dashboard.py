"""The chart's dashboard and alert files are exactly what dashboard.py generates, and the
dashboard is usable: unique panel ids, every panel has a query, variables a user can pick."""

from __future__ import annotations

import json
from typing import Any

import yaml

from skillwarden_devstack import dashboard


def test_chart_files_are_up_to_date_with_the_generator() -> None:
    assert dashboard.main(["--check"]) == 0, "run `python -m skillwarden_devstack.dashboard`"


def test_check_detects_a_hand_edit(tmp_path: Any, monkeypatch: Any) -> None:
    edited = tmp_path / "skillwarden.json"
    edited.write_text(dashboard.DASHBOARD_FILE.read_text().replace("Deny rate", "Deny ratio"))
    monkeypatch.setattr(dashboard, "DASHBOARD_FILE", edited)
    assert dashboard.main(["--check"]) == 1


def _panels() -> list[dict[str, Any]]:
    return [p for p in json.loads(dashboard.DASHBOARD_FILE.read_text())["panels"] if p["type"] != "row"]


def test_every_panel_has_a_unique_id_a_title_and_queries() -> None:
    board = json.loads(dashboard.DASHBOARD_FILE.read_text())
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) and 0 not in ids
    for panel in _panels():
        assert panel["title"] and panel["targets"], panel
        assert all(t["expr"] and t["refId"] for t in panel["targets"])
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    exprs = [t["expr"] for p in _panels() for t in p["targets"]]
    assert exprs == dashboard.dashboard_exprs()


def test_dashboard_shows_what_the_issue_asks_for() -> None:
    titles = {p["title"] for p in _panels()}
    assert {"Requests by decision", "Deny rate", "Approval rate", "Masked entities by type",
            "Approval latency", "Sidecar added latency", "Upstream time to first token",
            "Records spooled / shipped / failed", "Oldest unshipped record", "Policies by state",
            "Served bundle revisions", "Injections by result"} <= titles
    added = next(p for p in _panels() if p["title"] == "Sidecar added latency")
    assert [t["legendFormat"] for t in added["targets"]] == ["added p50 {{route}}", "added p99 {{route}}"]


def test_variables_filter_by_namespace_skill_and_model() -> None:
    variables = {v["name"]: v for v in json.loads(dashboard.DASHBOARD_FILE.read_text())["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    for name in ("namespace", "skill", "model"):
        variable = variables[name]
        assert variable["includeAll"] and variable["multi"] and variable["allValue"] == ".*"
        assert f'{name}=~"${name}"' in dashboard.dashboard_exprs()[0]


def test_concrete_replaces_every_grafana_variable() -> None:
    assert dashboard.concrete('rate(x{namespace=~"$namespace"}[$__rate_interval])') == \
        'rate(x{namespace=~".*"}[1m])'
    for where, expr in dashboard.all_exprs():
        assert "$" not in expr or where.startswith("alert"), (where, expr)


def test_alerts_file_matches_the_alert_table() -> None:
    rules = yaml.safe_load(dashboard.ALERTS_FILE.read_text())["groups"][0]["rules"]
    assert [r["alert"] for r in rules] == [a.name for a in dashboard.ALERTS]
    assert len({a.name for a in dashboard.ALERTS}) == len(dashboard.ALERTS)
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
