"""Fixtures for the chart tests (helpers live in chart_helpers.py)."""

from __future__ import annotations

import pytest

from skillwarden_devstack.tools import Binaries, ensure_all


@pytest.fixture(scope="session")
def bins() -> Binaries:
    return ensure_all()
