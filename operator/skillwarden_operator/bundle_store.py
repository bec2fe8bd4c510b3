"""The bundles this operator serves, one per namespace, and change notification for long polls.

A namespace is present only once it has been compiled from the API server's current list of
its SkillPolicies; it is removed when the namespace is gone, so a request never gets a bundle
this process no longer stands behind.
"""

from __future__ import annotations

import asyncio

from skillwarden_operator.bundle import Bundle


class BundleStore:
    def __init__(self) -> None:
        self._bundles: dict[str, Bundle] = {}
        self._changed: dict[str, asyncio.Event] = {}
        # Namespaces holding SkillPolicies when the process started (None: not listed yet). Until
        # each has a bundle, this replica is not ready: it would answer 404 for a namespace whose
        # policies it simply has not compiled yet.
        self.expected: set[str] | None = None

    def missing(self) -> list[str] | None:
        """Namespaces still to compile before this replica is ready (None: not known yet)."""
        if self.expected is None:
            return None
        return sorted(self.expected - set(self._bundles))

    def get(self, namespace: str) -> Bundle | None:
        return self._bundles.get(namespace)

    def namespaces(self) -> list[str]:
        return sorted(self._bundles)

    def changed(self, namespace: str) -> asyncio.Event:
        """An event set at the next change of the namespace's bundle (take it BEFORE comparing)."""
        return self._changed.setdefault(namespace, asyncio.Event())

    def put(self, bundle: Bundle) -> bool:
        """Store; True when the served content changed (a new revision)."""
        current = self._bundles.get(bundle.namespace)
        self._bundles[bundle.namespace] = bundle
        if current is not None and current.revision == bundle.revision:
            return False
        self._notify(bundle.namespace)
        return True

    def remove(self, namespace: str) -> bool:
        removed = self._bundles.pop(namespace, None) is not None
        if self.expected is not None:
            self.expected.discard(namespace)  # gone: nothing to wait for
        if removed:
            self._notify(namespace)
        return removed

    def _notify(self, namespace: str) -> None:
        event = self._changed.pop(namespace, None)
        if event is not None:
            event.set()
