"""Every metric the operator exports, in one place (the chart's dashboard reads names from here).

Label values are bounded: `namespace` only ever names a namespace that holds SkillPolicies (a
bundle request for an unknown namespace is counted under "unknown", so a client cannot invent
label values); states, results and codes come from fixed sets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

POLICIES = "skillwarden_operator_policies"
COMPILE_SECONDS = "skillwarden_operator_compile_duration_seconds"
COMPILATIONS_TOTAL = "skillwarden_operator_compilations_total"
BUNDLE_INFO = "skillwarden_operator_bundle_info"
BUNDLE_SIZE_BYTES = "skillwarden_operator_bundle_size_bytes"
BUNDLE_REQUESTS_TOTAL = "skillwarden_operator_bundle_requests_total"
BUNDLE_LONG_POLLS = "skillwarden_operator_bundle_long_polls"
ADMISSION_REVIEWS_TOTAL = "skillwarden_operator_admission_reviews_total"
INJECTIONS_TOTAL = "skillwarden_injections_total"  # counted by injection_handlers._count

# Names as Prometheus exposes them (counters gain `_total`, histograms `_bucket/_sum/_count`).
METRIC_NAMES: frozenset[str] = frozenset({
    POLICIES, COMPILE_SECONDS, COMPILATIONS_TOTAL, BUNDLE_INFO, BUNDLE_SIZE_BYTES, BUNDLE_REQUESTS_TOTAL,
    BUNDLE_LONG_POLLS, ADMISSION_REVIEWS_TOTAL, INJECTIONS_TOTAL,
})

POLICY_STATES = ("ready", "invalid")
_COMPILE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class OperatorMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    _revisions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        r = self.registry
        self.policies = Gauge(POLICIES, "SkillPolicies by namespace and state (ready, invalid)",
                              ["namespace", "state"], registry=r)
        self.compile_seconds = Histogram(COMPILE_SECONDS,
                                         "Time to compile a namespace's policies into a bundle",
                                         buckets=_COMPILE_BUCKETS, registry=r)
        self.compilations = Counter(COMPILATIONS_TOTAL.removesuffix("_total"),
                                    "Namespace compilations by result (success: every policy valid)",
                                    ["result"], registry=r)
        self.bundle_info = Gauge(BUNDLE_INFO, "The bundle revision served per namespace (value 1)",
                                 ["namespace", "revision"], registry=r)
        self.bundle_size = Gauge(BUNDLE_SIZE_BYTES, "Size of the served bundle", ["namespace"], registry=r)
        self.bundle_requests = Counter(BUNDLE_REQUESTS_TOTAL.removesuffix("_total"),
                                       "Bundle requests by namespace and HTTP code (200, 304, 404)",
                                       ["namespace", "code"], registry=r)
        self.long_polls = Gauge(BUNDLE_LONG_POLLS, "Bundle requests currently held open (long polling)",
                                registry=r)
        self.admission_reviews = Counter(ADMISSION_REVIEWS_TOTAL.removesuffix("_total"),
                                         "SkillPolicy admission reviews by result (allowed, denied)",
                                         ["result"], registry=r)
        self.injections = Counter(INJECTIONS_TOTAL.removesuffix("_total"),
                                  "Pod admissions by the injector: result (injected, unchanged, skipped, "
                                  "denied, failed) and reason", ["namespace", "result", "reason"], registry=r)

    def set_namespace(self, namespace: str, revision: str, size: int, ready: int, invalid: int) -> None:
        self.forget_namespace(namespace)
        self._revisions[namespace] = revision
        self.bundle_info.labels(namespace, revision).set(1)
        self.bundle_size.labels(namespace).set(size)
        self.policies.labels(namespace, "ready").set(ready)
        self.policies.labels(namespace, "invalid").set(invalid)

    def forget_namespace(self, namespace: str) -> None:
        revision = self._revisions.pop(namespace, None)
        if revision is None:
            return
        self.bundle_info.remove(namespace, revision)
        self.bundle_size.remove(namespace)
        for state in POLICY_STATES:
            self.policies.remove(namespace, state)

    def known(self, namespace: str) -> bool:
        return namespace in self._revisions
