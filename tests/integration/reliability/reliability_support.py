"""The real `skillwarden sidecar` process as a pod runs it, for reliability and security tests.

Every hook the command discovers is active: masking (upstream and client), session records spooled
and shipped to the stack's SeaweedFS Object Lock bucket, real OPA pulling a bundle built by the
operator's `build_bundle`. Only the Claude API is faked (`skillwarden_devstack.fake_claude`, run
in the test's event loop so tests read exactly what the upstream received).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import os
import secrets
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from skillwarden_devstack import components, processes
from skillwarden_devstack.processes import free_port
from skillwarden_operator.bundle import build_bundle

NAMESPACE = "finance"
WORKLOAD_SA = "report-bot"
REAL_KEY = "sk-ant-api03-REAL-provider-key-reliability-only-the-sidecar-knows"
SSN = "536-22-8726"
EMAIL = "carol.reliability@example.com"
MODEL = "claude-sonnet-4-6"


def policy(prefix: str, bucket: str, **spec_overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "defaultAction": "deny",
        "subjects": [
            {
                "name": "bot",
                "serviceAccounts": [WORKLOAD_SA],
                "skills": [{"type": "anthropic", "id": "xlsx"}],
                "models": ["claude-sonnet-4-*"],
                "tools": ["code_execution"],
                "maxTokens": 4096,
            },
            {
                "name": "leads",
                "groups": ["finance-leads"],
                "skills": [{"type": "anthropic", "id": "pdf"}],
                "models": ["claude-*"],
            },
        ],
        "rules": [
            {
                "name": "no-pptx",
                "action": "deny",
                "message": "no slide decks",
                "when": {"skills": [{"type": "anthropic", "id": "pptx"}]},
            },
            {
                "name": "no-credential-dumps",
                "action": "deny",
                "message": "no credential dumps",
                "when": {"promptMatches": ["(?i)password (list|dump)"]},
            },
        ],
        "masking": {"upstream": ["US_SSN", "EMAIL_ADDRESS"], "client": ["US_SSN"]},
        "recording": {"bucket": bucket, "prefix": prefix, "retentionDays": 1, "mode": "COMPLIANCE"},
    }
    spec.update(spec_overrides)
    return {
        "apiVersion": "skillwarden.io/v1alpha1",
        "kind": "SkillPolicy",
        "metadata": {"name": "reliability", "namespace": NAMESPACE},
        "spec": spec,
    }


@dataclasses.dataclass
class LocalOpa:
    url: str
    running: processes.Running

    def stop(self) -> None:
        processes.stop(self.running)


def start_opa_with(opa_binary: Path, work: Path, policies: list[dict[str, Any]]) -> LocalOpa:
    """OPA serving an operator-built bundle from a file (no bundle server needed)."""
    work.mkdir(parents=True, exist_ok=True)
    bundle = build_bundle(NAMESPACE, copy.deepcopy(policies))
    assert not bundle.invalid, bundle.invalid
    (work / "bundle.tar.gz").write_bytes(bundle.data)
    port = free_port()
    running = processes.spawn(
        f"opa-{work.name}",
        [
            str(opa_binary),
            "run",
            "--server",
            f"--addr=127.0.0.1:{port}",
            "--diagnostic-addr=",
            "--log-level=error",
            "--bundle",
            str(work / "bundle.tar.gz"),
        ],
        work / "opa.log",
    )
    url = f"http://127.0.0.1:{port}"
    processes.wait_until(
        "opa",
        lambda: urllib.request.urlopen(f"{url}/health?bundles").status == 200,
        running,
        30,
        "serving its bundle",
    )
    return LocalOpa(url, running)


@dataclasses.dataclass
class CliSidecar:
    """One `skillwarden sidecar` process; restartable on the same ports and spool."""

    url: str
    admin_url: str
    env: dict[str, str]
    log: Path
    process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "skillwarden_cli.main",
                "sidecar",
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        ready: dict[str, Any] = {}
        async with aiohttp.ClientSession() as http:
            for _ in range(400):
                try:
                    async with http.get(f"{self.admin_url}/readyz") as response:
                        ready = await response.json()
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                assert self.process.returncode is None, self.log.read_text()[-4000:]
                await asyncio.sleep(0.1)
        raise AssertionError(f"sidecar not ready: {ready}\n{self.log.read_text()[-4000:]}")

    async def stop(self) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), timeout=60)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        return self.process.returncode or 0

    async def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def metrics_text(self) -> str:
        async with aiohttp.ClientSession() as http, http.get(f"{self.admin_url}/metrics") as response:
            return await response.text()


def sidecar_env(
    stack: dict[str, Any],
    upstream_url: str,
    opa_url: str,
    provider_key: Path,
    work: Path,
    prefix: str,
    **extra: str,
) -> tuple[dict[str, str], int, int]:
    s3 = stack["s3"]
    port, admin = free_port(), free_port()
    env = {
        **os.environ,
        "SKILLWARDEN_NAMESPACE": NAMESPACE,
        "SKILLWARDEN_POD_NAME": "report-7f9c",
        "SKILLWARDEN_SERVICE_ACCOUNT": WORKLOAD_SA,
        "SKILLWARDEN_PORT": str(port),
        "SKILLWARDEN_ADMIN_PORT": str(admin),
        "SKILLWARDEN_ADMIN_HOST": "127.0.0.1",
        "SKILLWARDEN_UPSTREAM_URL": upstream_url,
        "SKILLWARDEN_OPA_URL": opa_url,
        "SKILLWARDEN_PROVIDER_KEY_FILE": str(provider_key),
        "SKILLWARDEN_APPROVALS": "off",
        "SKILLWARDEN_LOG_LEVEL": "INFO",
        "SKILLWARDEN_RECORDS_BUCKET": s3["bucket"],
        "SKILLWARDEN_RECORDS_PREFIX": prefix,
        "SKILLWARDEN_RECORDS_RETENTION_DAYS": "1",
        "SKILLWARDEN_RECORDS_DIGEST_INTERVAL": "1",
        "SKILLWARDEN_SPOOL_DIR": str(work / "spool"),
        "AWS_ENDPOINT_URL": s3["endpoint"],
        "AWS_ACCESS_KEY_ID": s3["access_key"],
        "AWS_SECRET_ACCESS_KEY": s3["secret_key"],
        "AWS_REGION": s3.get("region", "us-east-1"),
    }
    env.update(extra)
    return env, port, admin


def new_prefix(tag: str) -> str:
    return f"reliability-{tag}-{secrets.token_hex(4)}/"


def stored_objects(stack: dict[str, Any], prefix: str) -> dict[str, bytes]:
    s3 = stack["s3"]
    client = components.s3_client(s3["endpoint"], s3["access_key"], s3["secret_key"])
    out: dict[str, bytes] = {}
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"Bucket": s3["bucket"], "Prefix": prefix}
        if token:
            kwargs["ContinuationToken"] = token
        listed = client.list_objects_v2(**kwargs)
        for item in listed.get("Contents", []):
            out[item["Key"]] = client.get_object(Bucket=s3["bucket"], Key=item["Key"])["Body"].read()
        if not listed.get("IsTruncated"):
            return out
        token = listed["NextContinuationToken"]


def record_entries(objects: dict[str, bytes]) -> list[dict[str, Any]]:
    """Every session-record entry (`kind`, `record`, ...) in the shipped record objects."""
    from skillwarden_sidecar.recording.entry import decode_line

    entries: list[dict[str, Any]] = []
    for key, body in objects.items():
        if "/records/" in key:
            entries.extend(decode_line(line).entry for line in body.splitlines() if line.strip())
    return entries


def verify(stack: dict[str, Any], prefix: str, spool: Path) -> tuple[int, str]:
    """`skillwarden audit verify` as an auditor runs it, pinning the sidecar's public key."""
    s3 = stack["s3"]
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "skillwarden_cli.main",
            "audit",
            "verify",
            "--endpoint",
            s3["endpoint"],
            "--bucket",
            s3["bucket"],
            "--prefix",
            prefix,
            "--access-key",
            s3["access_key"],
            f"--secret-key={s3['secret_key']}",  # a secret may start with "-"
            "--trusted-key",
            str(spool / "keys" / "signing-key.pem.pub"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    return completed.returncode, completed.stdout + completed.stderr


SidecarStarter = Callable[..., contextlib.AbstractAsyncContextManager[CliSidecar]]


