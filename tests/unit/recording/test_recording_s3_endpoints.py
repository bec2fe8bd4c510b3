"""The S3-only endpoints data equals botocore's own, filtered to S3; odd files fall back."""

from __future__ import annotations

import json
from pathlib import Path

import botocore.loaders
import pytest

from skillwarden_sidecar.recording.s3_endpoints import load_s3_endpoints
from skillwarden_sidecar.recording.s3store import make_client


def test_equals_botocores_data_filtered_to_s3() -> None:
    loader = botocore.loaders.Loader()
    full, full_path = loader.load_data_with_path("endpoints")
    mine, path = load_s3_endpoints(list(loader.search_paths))
    assert path == full_path
    expected = {**full, "partitions": [
        {**p, "services": {k: v for k, v in p["services"].items() if k == "s3"}} for p in full["partitions"]]}
    assert mine == expected
    assert all(set(p["services"]) <= {"s3"} for p in mine["partitions"])
    assert any(p["services"] for p in mine["partitions"])  # S3 itself is kept


@pytest.mark.parametrize("text", ['{"partitions": [{"services": {"s3": {}} ]}', '{"partitions": 1}',
                                  '{"partitions": []} trailing', "not json"])
def test_malformed_files_are_refused(tmp_path: Path, text: str) -> None:
    (tmp_path / "endpoints.json").write_text(text)
    with pytest.raises(ValueError):
        load_s3_endpoints([str(tmp_path)])


def test_handmade_file_keeps_only_s3(tmp_path: Path) -> None:
    data = {"version": 3, "partitions": [{"partition": "aws", "services": {
        "ec2": {"endpoints": {"x": {}}}, "s3": {"endpoints": {"us-east-1": {}}}, "sqs": {}}}, {
        "partition": "aws-cn", "services": {}}]}
    (tmp_path / "endpoints.json").write_text(json.dumps(data, indent=2))
    mine, _ = load_s3_endpoints([str(tmp_path)])
    assert mine == {"version": 3, "partitions": [
        {"partition": "aws", "services": {"s3": {"endpoints": {"us-east-1": {}}}}},
        {"partition": "aws-cn", "services": {}}]}


def test_client_still_resolves_aws_s3_endpoints() -> None:
    client = make_client(None, "eu-west-1", "test-access-key", "test-secret-key")
    assert client.meta.endpoint_url == "https://s3.eu-west-1.amazonaws.com"
