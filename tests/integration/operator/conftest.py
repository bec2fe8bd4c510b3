"""Fixtures of the operator integration tests (defined in operator_it_helpers)."""

from operator_it_helpers import cluster, opa_for, operators

__all__ = ["cluster", "opa_for", "operators"]
