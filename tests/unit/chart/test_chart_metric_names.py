"""One source of truth for metric names: every series the dashboard or an alert reads must be
defined by the module that exports it (read from the real prometheus_client collectors)."""

from __future__ import annotations

import importlib
import inspect
import re
from types import ModuleType

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from skillwarden_devstack import dashboard

METRIC_MODULES = (
    "skillwarden_sidecar.metrics",
    "skillwarden_sidecar.recording.metrics",
    "skillwarden_operator.metrics",
)

# PromQL words that are not series names (functions, aggregations, operators, modifiers).
PROMQL_WORDS = frozenset({
    "sum", "min", "max", "avg", "count", "rate", "increase", "irate", "deriv", "delta",
    "histogram_quantile", "clamp_min", "clamp_max", "predict_linear", "time", "abs", "absent",
    "max_over_time", "min_over_time", "avg_over_time", "label_replace", "topk", "bottomk",
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "offset", "bool", "vector", "scalar",
})

_SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "stateset": ("",),
    "enum": ("",),
    "unknown": ("",),
}


def _families(module: ModuleType) -> list[tuple[str, str]]:
    """(name, type) of every metric family a module defines: module-level collectors, and the
    collectors of classes that build their metrics into a registry passed to them."""
    found: list[tuple[str, str]] = []
    for value in vars(module).values():
        if isinstance(value, MetricWrapperBase):
            found.extend((family.name, family.type) for family in value.describe())
        elif (inspect.isclass(value) and value.__module__ == module.__name__
              and "registry" in inspect.signature(value).parameters):
            registry = CollectorRegistry()
            value(registry=registry)
            found.extend((family.name, family.type) for family in registry.collect())
    return found


def defined_series() -> dict[str, str]:
    """Exposed series name -> defining module."""
    series: dict[str, str] = {}
    for name in METRIC_MODULES:
        module = importlib.import_module(name)
        families = _families(module)
        assert families, f"{name} defines no prometheus_client metrics"
        for family, kind in families:
            for suffix in _SERIES_SUFFIXES[kind]:
                series[family + suffix] = name
    return series


def series_names(expr: str) -> set[str]:
    """Series names an expression reads (our own query text, so the stdlib `re` is fine here)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)                    # string literals
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\{[^}]*\}", " ", text)                              # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)                             # range selectors
    tokens = set(re.findall(r"(?<![\w.$])[A-Za-z_:][\w:]*", text))
    return {token for token in tokens if token not in PROMQL_WORDS}


def test_the_extractor_finds_exactly_the_series_of_a_known_query() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, route) (rate(skillwarden_added_latency_seconds_bucket'
            '{namespace=~"$namespace",route="x"}[$__rate_interval]))) '
            '/ clamp_min(sum(rate(up[1m] offset 5m)), 1e-9)')
    assert series_names(expr) == {"skillwarden_added_latency_seconds_bucket", "up"}


ALL_EXPRS = ([("panel", e) for e in dashboard.dashboard_exprs()]
             + [("alert", e) for e in dashboard.alert_exprs()])


@pytest.mark.parametrize(("where", "expr"), ALL_EXPRS, ids=[f"{w}{i}" for i, (w, _) in enumerate(ALL_EXPRS)])
def test_every_series_a_query_reads_is_defined_by_a_metrics_module(where: str, expr: str) -> None:
    defined = defined_series()
    names = series_names(expr)
    assert names, f"{where} query reads no series: {expr}"
    missing = sorted(names - defined.keys() - dashboard.EXTERNAL_SERIES.keys())
    assert not missing, (f"{where} query reads {missing}, which none of {METRIC_MODULES} defines "
                         f"(rename in e2e/skillwarden_devstack/dashboard.py or define it): {expr}")


def test_the_dashboard_covers_every_area_the_operators_watch() -> None:
    used = set().union(*(series_names(e) for e in dashboard.dashboard_exprs()))
    defined = defined_series()
    by_module = {module: {s for s in used if defined.get(s) == module} for module in METRIC_MODULES}
    for module, series in by_module.items():
        assert series, f"the dashboard shows nothing from {module}"


def test_external_series_are_not_ours_to_define() -> None:
    # An external name must not shadow one of ours (then it would need no exception).
    assert not dashboard.EXTERNAL_SERIES.keys() & defined_series().keys()
    assert all(not name.startswith("skillwarden_") for name in dashboard.EXTERNAL_SERIES)
