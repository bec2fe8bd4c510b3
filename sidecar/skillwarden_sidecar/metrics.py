"""Every metric the sidecar exports, in one place (the chart's dashboard reads names from here).

Label values are bounded: namespace is this pod's own; route/decision/cause come from fixed sets;
model and skill values pass through `BoundedLabel`, which admits a fixed number of distinct values
and reports the rest as "other" — a client cannot blow up Prometheus by inventing model names.
Values never include credentials or request text.
"""

from __future__ import annotations

import functools
from typing import Any, TypeVar, cast

import re2
from prometheus_client import CollectorRegistry, Counter, Histogram

MetricT = TypeVar("MetricT", Counter, Histogram)

# Sub-millisecond buckets: the sidecar's own cost and OPA decisions live there.
_FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_SLOW_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_APPROVAL_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800.0)

REQUESTS_TOTAL = "skillwarden_requests_total"
DECISION_SECONDS = "skillwarden_decision_seconds"
DECISIONS_TOTAL = "skillwarden_decisions_total"
UPSTREAM_TTFT_SECONDS = "skillwarden_upstream_ttft_seconds"
UPSTREAM_SECONDS = "skillwarden_upstream_seconds"
ADDED_LATENCY_SECONDS = "skillwarden_added_latency_seconds"
ERRORS_TOTAL = "skillwarden_errors_total"
MASKED_ENTITIES_TOTAL = "skillwarden_masked_entities_total"
APPROVALS_TOTAL = "skillwarden_approvals_total"
APPROVAL_WAIT_SECONDS = "skillwarden_approval_wait_seconds"

# Names as Prometheus exposes them (counters gain `_total`, histograms `_bucket/_sum/_count`).
METRIC_NAMES: frozenset[str] = frozenset({
    REQUESTS_TOTAL, DECISION_SECONDS, DECISIONS_TOTAL, UPSTREAM_TTFT_SECONDS, UPSTREAM_SECONDS,
    ADDED_LATENCY_SECONDS,
    ERRORS_TOTAL, MASKED_ENTITIES_TOTAL, APPROVALS_TOTAL, APPROVAL_WAIT_SECONDS,
})

# Label values come from what a tenant sends (model, skill ids in bodies and paths): an identifier
# starts with a letter and carries no '@' (e-mail) and fewer than 9 digits (SSN, phone, card), so
# personal data put there by a caller is counted as "other", never exported.
_LABEL_SAFE = re2.compile(r"^[A-Za-z][A-Za-z0-9._:+-]{0,63}$")
_MAX_LABEL_DIGITS = 8
_MODEL_SNAPSHOT = re2.compile(r"-(?:[0-9]{8}|latest)$")


@functools.lru_cache(maxsize=256)  # asked on every request with a handful of distinct models
def model_family(model: str) -> str:
    """`claude-sonnet-4-5-20250929` and `claude-sonnet-4-5-latest` count as `claude-sonnet-4-5`."""
    return _MODEL_SNAPSHOT.sub("", model) if len(model) <= 128 else model


class BoundedLabel:
    """Admit at most `limit` distinct well-formed values; everything else is "other"."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if not value or not _LABEL_SAFE.match(value) or len(self._seen) >= self._limit or \
                sum(c.isdigit() for c in value) > _MAX_LABEL_DIGITS:
            return "other" if value else "none"
        self._seen.add(value)
        return value


class SidecarMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(REQUESTS_TOTAL.removesuffix("_total"),
                                "Requests by policy decision, namespace, skill, model and route",
                                ["decision", "namespace", "skill", "model", "route"], registry=r)
        self.decision_seconds = Histogram(DECISION_SECONDS, "Time to get a policy decision from OPA",
                                          buckets=_FAST_BUCKETS, registry=r)
        self.decisions = Counter(DECISIONS_TOTAL.removesuffix("_total"),
                                 "Policy decisions by source: asked of OPA or reused from the cache",
                                 ["source"], registry=r)
        self.upstream_ttft = Histogram(UPSTREAM_TTFT_SECONDS,
                                       "Upstream time to first byte (streams: first event)",
                                       ["route"], buckets=_SLOW_BUCKETS, registry=r)
        self.upstream_seconds = Histogram(UPSTREAM_SECONDS, "Upstream total time", ["route"],
                                          buckets=_SLOW_BUCKETS, registry=r)
        self.added_latency = Histogram(ADDED_LATENCY_SECONDS,
                                       "Time the sidecar itself adds before the upstream's answer starts "
                                       "(excluding time waiting for human approval)",
                                       ["route"], buckets=_FAST_BUCKETS, registry=r)
        self.errors = Counter(ERRORS_TOTAL.removesuffix("_total"), "Errors and refusals by cause", ["cause"],
                              registry=r)
        self.masked_entities = Counter(MASKED_ENTITIES_TOTAL.removesuffix("_total"),
                                       "Masked entities by type and direction (upstream, client, record)",
                                       ["entity", "direction"], registry=r)
        self.approvals = Counter(APPROVALS_TOTAL.removesuffix("_total"), "Approval outcomes by state",
                                 ["state"], registry=r)
        self.approval_wait = Histogram(APPROVAL_WAIT_SECONDS, "Time requests were held for approval",
                                       buckets=_APPROVAL_BUCKETS, registry=r)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.model_label = BoundedLabel(50)
        self.skill_label = BoundedLabel(100)
        self.entity_label = BoundedLabel(100)

    def child(self, metric: MetricT, *values: str) -> MetricT:
        """`metric.labels(*values)`, looked up once per label set: prometheus_client normalises
        and locks on every `labels()` call (~5 us, five times per request). Label sets are
        bounded (fixed sets and `BoundedLabel`), so the cache is too."""
        key = (id(metric), values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return cast(MetricT, found)
