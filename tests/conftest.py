"""Markers by folder: tests/unit -> unit, tests/integration -> integration, tests/e2e -> e2e."""

from __future__ import annotations

from pathlib import Path

import pytest

_TESTS = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        relative = Path(str(item.path)).relative_to(_TESTS)
        folder = relative.parts[0] if len(relative.parts) > 1 else ""
        if folder in {"unit", "integration", "e2e"}:
            item.add_marker(getattr(pytest.mark, folder))


# ---------------------------------------------------------------------------------------------
# The real local stack, once per test session. `SKILLWARDEN_TEST_STATE_DIR` reuses a stack that a
# developer already brought up with `skillwarden dev up --state-dir ...` (it is then left running).
# A component that cannot be built or started fails the tests that need it, with the log path —
# never a skip.

import os  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from typing import Any  # noqa: E402

from skillwarden_devstack import stack as devstack  # noqa: E402


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    reuse = os.environ.get("SKILLWARDEN_TEST_STATE_DIR")
    if reuse:
        yield devstack.up(Path(reuse))
        return
    state_dir = tmp_path_factory.mktemp("stack")
    document = devstack.up(state_dir)
    try:
        yield document
    finally:
        devstack.down(state_dir)
