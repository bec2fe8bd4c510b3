"""A real kube-apiserver with the SkillApproval CRD, RBAC, a sidecar service account and the
admission webhook running in a kopf operator on loopback (approvals_webhook_harness.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from approvals_helpers import ApprovalsEnv, approvals_environment


@pytest.fixture(scope="session")
def approvals_env(stack: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApprovalsEnv]:
    with approvals_environment(stack, tmp_path_factory.mktemp("approvals-webhook")) as env:
        yield env
