"""Fixtures for the recording integration tests: real SeaweedFS S3 from the `stack` fixture and
one fresh prefix (and spool) per test. Helpers live in recording_helpers.py."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from recording_helpers import ConfigFactory

from skillwarden_sidecar.recording import RecorderConfig
from skillwarden_sidecar.recording.s3store import make_client


@pytest.fixture
def s3(stack: dict[str, Any]) -> dict[str, Any]:
    return dict(stack["s3"])


@pytest.fixture
def client(s3: dict[str, Any]) -> Any:
    return make_client(s3["endpoint"], s3.get("region", "us-east-1"), s3["access_key"], s3["secret_key"])


@pytest.fixture
def make_config(s3: dict[str, Any], tmp_path: Path) -> ConfigFactory:
    prefix = f"it-{uuid.uuid4().hex[:10]}/"

    def factory(**overrides: Any) -> RecorderConfig:
        values: dict[str, Any] = {
            "spool_dir": tmp_path / "spool", "bucket": s3["bucket"], "prefix": prefix,
            "endpoint_url": s3["endpoint"], "access_key": s3["access_key"], "secret_key": s3["secret_key"],
            "retention_days": 1, "namespace": "finance", "pod": "report-7f9c",
            "digest_interval_s": 60.0, "segment_max_age_s": 0.2, "close_ship_timeout_s": 15.0,
        }
        values.update(overrides)
        return RecorderConfig(**values)

    return factory
