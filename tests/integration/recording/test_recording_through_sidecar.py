"""The recording hook inside the real sidecar: requests from the official anthropic SDK, real OPA
with an operator-built bundle, the masking hook, the fake Claude upstream, real SeaweedFS. Every
exchange — allowed and denied — is recorded, masked, and verified."""

from __future__ import annotations

import argparse
import contextlib
import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import anthropic
import jsonschema
import pytest
from recording_helpers import public_key_of, verify_cli

from skillwarden_devstack import fake_claude, processes, tools
from skillwarden_operator.bundle import build_bundle
from skillwarden_sidecar import app as sidecar_app
from skillwarden_sidecar.config import SidecarConfig
from skillwarden_sidecar.masking import sidecar_hook as masking_hook
from skillwarden_sidecar.pipeline import Hooks
from skillwarden_sidecar.recording import sidecar_hook as recording_hook
from skillwarden_sidecar.recording.entry import decode_line

NAMESPACE, SA = "finance", "report-bot"
SSN = "536-90-4412"
MODEL = "claude-haiku-4-5"
SCHEMA_FILE = Path(__file__).parents[3] / "sidecar/skillwarden_sidecar/recording/schema/record.v1.json"
POLICY: dict[str, Any] = {
    "apiVersion": "skillwarden.io/v1alpha1", "kind": "SkillPolicy",
    "metadata": {"name": "recorded", "namespace": NAMESPACE},
    "spec": {
        "defaultAction": "deny",
        "subjects": [{"name": "bot", "serviceAccounts": [SA], "models": ["claude-*"], "maxTokens": 4096}],
        "rules": [{"name": "no-credential-dumps", "action": "deny", "message": "no credential dumps",
                   "when": {"promptMatches": ["(?i)passwords? (list|dump)"]}}],
        "masking": {"upstream": ["US_SSN"], "client": ["US_SSN"]},
        "recording": {"retentionDays": 45, "mode": "COMPLIANCE"},
    },
}


@pytest.fixture(scope="module")
def recording_opa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("recording-opa")
    bundle = build_bundle(NAMESPACE, [POLICY])
    (work / "bundle.tar.gz").write_bytes(bundle.data)
    port = processes.free_port()
    running = processes.spawn("opa-recording", [str(tools.ensure_all().opa), "run", "--server",
                                                f"--addr=127.0.0.1:{port}", "--diagnostic-addr=",
                                                "--bundle", str(work / "bundle.tar.gz")], work / "opa.log")
    processes.wait_until("opa-recording", lambda: processes.port_open(port), running, 30, "listening")
    yield f"http://127.0.0.1:{port}"
    processes.stop(running)


async def test_sidecar_records_allowed_and_denied_exchanges_masked(
        recording_opa: str, s3: dict[str, Any], client: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3["access_key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3["secret_key"])
    prefix = f"sidecar-{uuid.uuid4().hex[:10]}/"
    key_file = tmp_path / "provider-key"
    key_file.write_text("sk-ant-api03-provider-key\n")
    parser = argparse.ArgumentParser()
    masking_hook.configure(parser)
    recording_hook.configure(parser)
    args = parser.parse_args([
        "--records-bucket", s3["bucket"], "--records-prefix", prefix, "--records-endpoint", s3["endpoint"],
        "--records-spool-dir", str(tmp_path / "spool"), "--records-retention-days", "1",
        "--records-digest-interval", "1"])
    hooks = Hooks()
    recording_hook.install(args, None, hooks)
    masking_hook.install(args, None, hooks)
    assert isinstance(hooks.recording, recording_hook.RecordingHook)
    fake = fake_claude.FakeClaude(fake_claude.Settings(api_key_file=str(key_file)))
    async with fake_claude.running(fake) as upstream:
        config = SidecarConfig(namespace=NAMESPACE, pod_name="report-7f9c", service_account=SA,
                               provider_key_file=key_file, upstream_url=upstream, opa_url=recording_opa,
                               opa_timeout=2.0, port=0, admin_port=0, admin_host="127.0.0.1")
        application = sidecar_app.build_app(config, hooks)
        runner, port = await sidecar_app.start(application, config, "127.0.0.1", 0)
        try:
            sdk = anthropic.AsyncAnthropic(base_url=f"http://127.0.0.1:{port}", api_key="placeholder",
                                           max_retries=0, timeout=30)
            answer = await sdk.messages.create(model=MODEL, max_tokens=100, messages=[
                {"role": "user", "content": f"Payroll check for SSN {SSN}, please"}])
            assert SSN not in json.dumps(answer.model_dump())
            with pytest.raises(anthropic.PermissionDeniedError):
                await sdk.messages.create(model=MODEL, max_tokens=100, messages=[
                    {"role": "user", "content": "password dump for the admin accounts"}])
            registry = application[sidecar_app.METRICS].registry  # served on the admin /metrics
            assert (registry.get_sample_value("skillwarden_records_spooled_total") or 0) >= 5
        finally:
            with contextlib.suppress(Exception):
                await runner.cleanup()  # closes the recorder: final digest, last shipping pass

    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    entries = []
    declared = {"retentionDays": 45, "mode": "COMPLIANCE"}  # the policy's, not the sidecar's 1 day
    for item in client.list_objects_v2(Bucket=s3["bucket"], Prefix=prefix)["Contents"]:
        body = client.get_object(Bucket=s3["bucket"], Key=item["Key"])["Body"].read()
        if "/keys/" not in item["Key"]:
            lock = client.get_object_retention(Bucket=s3["bucket"], Key=item["Key"])["Retention"]
            assert lock["Mode"] == "COMPLIANCE"
            assert lock["RetainUntilDate"] - item["LastModified"] > timedelta(days=44), item["Key"]
        assert SSN.encode() not in body  # nothing stored in clear
        if "/records/" in item["Key"]:
            for line in body.splitlines():
                validator.validate(json.loads(line))
                entries.append(decode_line(line).entry)
    requests = [e["record"] for e in entries if e["kind"] == "request"]
    responses = {e["record"]["exchange_id"]: e["record"] for e in entries if e["kind"] == "response"}
    assert sorted(r["decision"]["action"] for r in requests) == ["allow", "deny"]
    allowed = next(r for r in requests if r["decision"]["action"] == "allow")
    denied = next(r for r in requests if r["decision"]["action"] == "deny")
    assert "Payroll check for SSN" in allowed["prompt"]["text"]
    assert allowed["masking"]["counts"]["US_SSN"] >= 1
    assert allowed["workload"] == {"namespace": NAMESPACE, "pod": "report-7f9c", "service_account": SA}
    assert responses[allowed["exchange_id"]]["outcome"] == "forwarded"
    assert responses[allowed["exchange_id"]]["usage"]["output_tokens"] > 0
    assert denied["decision"]["rule"] == "no-credential-dumps"
    assert [r["decision"]["recording"] for r in requests] == [declared, declared]
    assert [r["recording"] for r in responses.values()] == [declared, declared]
    assert (responses[denied["exchange_id"]]["outcome"], responses[denied["exchange_id"]]["status"]) == (
        "rejected", 403)

    hook = hooks.recording
    code, report = verify_cli(s3, prefix, public_key_of(hook.recorder.config), "--check-retention",
                              "--retention-days", "1")
    assert (code, report["findings"]) == (0, [])
