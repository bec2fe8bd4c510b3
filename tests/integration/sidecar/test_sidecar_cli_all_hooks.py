"""`skillwarden sidecar` as a pod would run it, with every team's hook the command discovers:
masking (upstream and client), session records shipped to the stack's Object Lock bucket, real
OPA with a bundle whose policy asks for both. Guards the wiring between the parts."""

from __future__ import annotations

import asyncio
import copy
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
from sidecar_support import NAMESPACE, TEST_POLICIES, WORKLOAD_SA, BundleServer, start_opa

from skillwarden_devstack import components
from skillwarden_devstack.fake_claude import FakeClaude
from skillwarden_devstack.processes import free_port

SSN = "536-22-8726"


async def test_cli_with_masking_and_recording_hooks(stack: dict[str, Any], fake: tuple[FakeClaude, str],
                                                    provider_key: Path, opa_binary: Path,
                                                    tmp_path: Path) -> None:
    upstream, url = fake
    s3 = stack["s3"]
    prefix = f"sidecar-it-{secrets.token_hex(4)}/"
    policies = copy.deepcopy(TEST_POLICIES)
    policies[0]["spec"]["masking"] = {"upstream": ["US_SSN", "EMAIL_ADDRESS"], "client": ["US_SSN"]}
    policies[0]["spec"]["recording"] = {"bucket": s3["bucket"], "prefix": prefix, "retentionDays": 1,
                                        "mode": "COMPLIANCE"}
    bundles = BundleServer()
    bundles.publish(NAMESPACE, policies)
    opa = start_opa(opa_binary, tmp_path / "opa", bundles.url, NAMESPACE)
    port, admin = free_port(), free_port()
    env = {**os.environ, "SKILLWARDEN_NAMESPACE": NAMESPACE, "SKILLWARDEN_SERVICE_ACCOUNT": WORKLOAD_SA,
           "SKILLWARDEN_PORT": str(port), "SKILLWARDEN_ADMIN_PORT": str(admin),
           "SKILLWARDEN_ADMIN_HOST": "127.0.0.1", "SKILLWARDEN_UPSTREAM_URL": url,
           "SKILLWARDEN_OPA_URL": opa.url, "SKILLWARDEN_PROVIDER_KEY_FILE": str(provider_key),
           "SKILLWARDEN_APPROVALS": "off", "SKILLWARDEN_RECORDS_BUCKET": s3["bucket"],
           "SKILLWARDEN_RECORDS_PREFIX": prefix, "SKILLWARDEN_RECORDS_RETENTION_DAYS": "1",
           "SKILLWARDEN_SPOOL_DIR": str(tmp_path / "spool"), "AWS_ENDPOINT_URL": s3["endpoint"],
           "AWS_ACCESS_KEY_ID": s3["access_key"], "AWS_SECRET_ACCESS_KEY": s3["secret_key"],
           "AWS_REGION": s3.get("region", "us-east-1")}
    log = tmp_path / "sidecar.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "skillwarden_cli.main", "sidecar", env=env, stdout=out,
            stderr=subprocess.STDOUT)
    try:
        ready: dict[str, Any] = {}
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                try:
                    async with http.get(f"http://127.0.0.1:{admin}/readyz") as response:
                        ready = await response.json()
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert process.returncode is None, log.read_text()
                await asyncio.sleep(0.1)
        assert ready == {"opa_bundle": True, "provider_key": True, "recording": True, "ready": True}
        sdk = anthropic.AsyncAnthropic(base_url=f"http://127.0.0.1:{port}", api_key="placeholder",
                                       max_retries=0)
        prompt = f"My SSN is {SSN}, mail bob@example.com"
        answer = await sdk.messages.create(model="claude-sonnet-4-6", max_tokens=64,
                                           messages=[{"role": "user", "content": prompt}])
        async with sdk.messages.stream(model="claude-sonnet-4-6", max_tokens=64,
                                       messages=[{"role": "user", "content": prompt}]) as stream:
            streamed = await stream.get_final_message()
        for message in (answer, streamed):
            assert message.content[0].type == "text" and SSN not in message.content[0].text
        for received in upstream.received:
            sent = received.body.decode()
            assert SSN not in sent and "bob@example.com" not in sent and "[US_SSN]" in sent
        process.terminate()
        assert await asyncio.wait_for(process.wait(), timeout=60) == 0, log.read_text()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        opa.stop()
        bundles.close()
    client = components.s3_client(s3["endpoint"], s3["access_key"], s3["secret_key"])
    listed = await asyncio.to_thread(client.list_objects_v2, Bucket=s3["bucket"], Prefix=prefix)
    keys = [o["Key"] for o in listed.get("Contents", [])]
    assert keys, "no session records shipped"

    def read(key: str) -> bytes:
        body: bytes = client.get_object(Bucket=s3["bucket"], Key=key)["Body"].read()
        return body

    stored = b"".join([await asyncio.to_thread(read, k) for k in keys])
    assert b"[US_SSN]" in stored  # the exchanges were recorded, masked
    assert SSN.encode() not in stored and b"sk-ant" not in stored
    assert "sk-ant" not in log.read_text() and SSN not in log.read_text()
