"""`skillwarden sidecar` as a process configured only by environment variables (what an injected
pod spec gives it), and start-up refusal on bad configuration naming the setting."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import anthropic
from prometheus_client.parser import text_string_to_metric_families
from sidecar_support import NAMESPACE, WORKLOAD_SA, Opa

from skillwarden_devstack.fake_claude import FakeClaude
from skillwarden_devstack.processes import free_port
from skillwarden_sidecar import metrics

SIDECAR = [sys.executable, "-m", "skillwarden_cli.main", "sidecar"]


async def test_sidecar_process_from_env_serves_and_exposes_metrics(
        fake: tuple[FakeClaude, str], policy_opa: Opa, provider_key: Path, tmp_path: Path) -> None:
    upstream, url = fake
    port, admin = free_port(), free_port()
    env = {**os.environ, "SKILLWARDEN_NAMESPACE": NAMESPACE, "SKILLWARDEN_POD_NAME": "report-7f9c",
           "SKILLWARDEN_SERVICE_ACCOUNT": WORKLOAD_SA, "SKILLWARDEN_PORT": str(port),
           "SKILLWARDEN_ADMIN_PORT": str(admin), "SKILLWARDEN_ADMIN_HOST": "127.0.0.1",
           "SKILLWARDEN_UPSTREAM_URL": url, "SKILLWARDEN_OPA_URL": policy_opa.url,
           "SKILLWARDEN_PROVIDER_KEY_FILE": str(provider_key), "SKILLWARDEN_APPROVALS": "off"}
    log = tmp_path / "sidecar.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(*SIDECAR, env=env, stdout=out,
                                                       stderr=subprocess.STDOUT)
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                try:
                    async with http.get(f"http://127.0.0.1:{admin}/readyz") as ready:
                        if ready.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert process.returncode is None, log.read_text()
                await asyncio.sleep(0.05)
            sdk = anthropic.AsyncAnthropic(base_url=f"http://127.0.0.1:{port}", api_key="placeholder",
                                           max_retries=0)
            answer = await sdk.messages.create(model="claude-sonnet-4-6", max_tokens=16,
                                               messages=[{"role": "user", "content": "hello"}])
            assert answer.content[0].type == "text"
            async with http.get(f"http://127.0.0.1:{admin}/metrics") as scraped:
                text = await scraped.text()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        requests = families["skillwarden_requests"]
        assert [(s.labels, s.value) for s in requests.samples if s.name.endswith("_total")] == [
            ({"decision": "allow", "namespace": NAMESPACE, "skill": "none", "model": "claude-sonnet-4-6",
              "route": "/v1/messages"}, 1.0)]
        exposed = {s.name for f in families.values() for s in f.samples}
        for name in (metrics.DECISION_SECONDS, metrics.UPSTREAM_SECONDS, metrics.UPSTREAM_TTFT_SECONDS,
                     metrics.ADDED_LATENCY_SECONDS):
            assert f"{name}_count" in exposed, name
        assert "sk-ant" not in text and "sk-ant" not in log.read_text()
        # Access lines are written in batches, at most a second late (skillwarden_sidecar.logbuffer).
        access: list[str] = []
        for _ in range(40):
            access = [line for line in log.read_text().splitlines() if "skillwarden.sidecar.access" in line]
            if access:
                break
            await asyncio.sleep(0.05)
        assert len(access) == 1 and "decision=allow status=200" in access[0] and "hello" not in access[0]
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert upstream.received[0].headers["x-api-key"] != "placeholder"


def run_expecting_failure(env_overrides: dict[str, str], *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKILLWARDEN_")}
    env.update(env_overrides)
    result = subprocess.run([*SIDECAR, *args], env=env, capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    return result.stderr


def test_invalid_configuration_names_the_setting(provider_key: Path) -> None:
    base = {"SKILLWARDEN_NAMESPACE": NAMESPACE, "SKILLWARDEN_PROVIDER_KEY_FILE": str(provider_key),
            "SKILLWARDEN_APPROVALS": "off"}
    assert "--namespace (env SKILLWARDEN_NAMESPACE): is required" in run_expecting_failure(
        {"SKILLWARDEN_PROVIDER_KEY_FILE": str(provider_key)})
    assert "--port (env SKILLWARDEN_PORT)" in run_expecting_failure({**base, "SKILLWARDEN_PORT": "70000"})
    assert "--opa-timeout (env SKILLWARDEN_OPA_TIMEOUT): must be between" in run_expecting_failure(
        base, "--opa-timeout", "30")
    assert "--jwt-algorithms (env SKILLWARDEN_JWT_ALGORITHMS): HS256 not allowed" in run_expecting_failure(
        {**base, "SKILLWARDEN_JWT_ALGORITHMS": "RS256,HS256"})
    # (every other setting's validation is covered by tests/unit/sidecar/test_sidecar_config.py)
    assert "/nonexistent/key is not a readable file" in run_expecting_failure(
        {**base, "SKILLWARDEN_PROVIDER_KEY_FILE": "/nonexistent/key"})
