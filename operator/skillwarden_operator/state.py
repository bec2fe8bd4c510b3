"""What the operator process holds: the served bundles, metrics, config, API access, and the
per-namespace serialisation of compilations. Handed to kopf handlers as `memo.state`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from skillwarden_operator.bundle_store import BundleStore
from skillwarden_operator.config import OperatorConfig
from skillwarden_operator.kube import Kube
from skillwarden_operator.metrics import OperatorMetrics


@dataclass
class OperatorState:
    config: OperatorConfig
    kube: Kube
    store: BundleStore = field(default_factory=BundleStore)
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    requested: dict[str, int] = field(default_factory=dict)  # namespace -> compile requests so far
    covered: dict[str, int] = field(default_factory=dict)  # namespace -> requests the last compile saw
    terminating: set[str] = field(default_factory=set)  # namespaces being deleted (bundle: deny-all)

    def lock(self, namespace: str) -> asyncio.Lock:
        return self._locks.setdefault(namespace, asyncio.Lock())
