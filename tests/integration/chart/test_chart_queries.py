"""Every dashboard panel query and every alert expression is valid PromQL for the real Prometheus
of the stack (promtool query instant; Grafana variables replaced by their stand-ins)."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from skillwarden_devstack import dashboard
from skillwarden_devstack.tools import Binaries

EXPRS = dashboard.all_exprs()


def test_stand_ins_leave_no_grafana_variable() -> None:
    assert all("$" not in expr for where, expr in EXPRS if where.startswith("panel"))
    assert len(EXPRS) == len(dashboard.dashboard_exprs()) + len(dashboard.ALERTS)


@pytest.mark.parametrize(("where", "expr"), EXPRS, ids=[where for where, _ in EXPRS])
def test_query_evaluates_without_error(bins: Binaries, stack: dict[str, Any], where: str, expr: str) -> None:
    result = subprocess.run([str(bins.promtool), "query", "instant", stack["prometheus"], expr],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"{where}: {expr}\n{result.stderr}"


def test_a_broken_query_is_reported(bins: Binaries, stack: dict[str, Any]) -> None:
    # The check above can fail: Prometheus rejects what it cannot parse.
    result = subprocess.run([str(bins.promtool), "query", "instant", stack["prometheus"],
                             "sum by (namespace (rate(skillwarden_requests_total[1m]))"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
