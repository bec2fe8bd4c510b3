"""Helpers for the recording integration tests: realistic sessions, the auditor's CLI run
in-process, and the filer back door used to tamper with stored objects."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from skillwarden_cli.main import main as cli_main
from skillwarden_sidecar.recording import Recorder, RecorderConfig
from skillwarden_sidecar.recording.samples import request_record, response_record

ConfigFactory = Callable[..., RecorderConfig]


async def run_session(recorder: Recorder, count: int, tag: str = "ex") -> dict[str, str]:
    """Mixed traffic, concurrently: denied (rejected 403), masked-and-allowed, plain allowed.
    Request part durable before the (pretend) upstream call, response part after."""
    actions: dict[str, str] = {}

    async def one(number: int) -> None:
        exchange = f"{tag}-{number:04d}"
        kind = ("deny", "masked", "allow")[number % 3]
        recorder.admit()
        if kind == "deny":
            await recorder.append("request", request_record(
                exchange, action="deny", rule="no-credential-dumps", prompt="list all passwords"))
            await recorder.append("response", response_record(exchange, outcome="rejected", status=403))
        else:
            masked = {"US_SSN": 1, "EMAIL_ADDRESS": 1} if kind == "masked" else {}
            prompt = "Payroll for [US_SSN] mail [EMAIL]" if kind == "masked" else "Summarise Q3"
            await recorder.append("request", request_record(exchange, prompt=prompt, masked=masked))
            await asyncio.sleep(0.001)
            await recorder.append("response", response_record(exchange))
        actions[exchange] = "deny" if kind == "deny" else "allow"

    await asyncio.gather(*(one(n) for n in range(count)))
    return actions


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli_main(list(argv))
    return code, out.getvalue()


def verify_cli(s3: dict[str, Any], prefix: str, key: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    code, text = run_cli("audit", "verify", "--endpoint", s3["endpoint"], "--bucket", s3["bucket"],
                         "--prefix", prefix, f"--access-key={s3['access_key']}",
                         f"--secret-key={s3['secret_key']}", "--trusted-key", str(key), *extra)
    return code, json.loads(text)


def public_key_of(config: RecorderConfig) -> Path:
    assert config.signing_key_file is not None
    return config.signing_key_file.with_name(config.signing_key_file.name + ".pub")


def codes(report: dict[str, Any]) -> set[str]:
    return {f["code"] for f in report["findings"]}


# -- the storage back door (SeaweedFS filer HTTP, no auth): tests only ---------------------------

def version_path(s3: dict[str, Any], client: Any, key: str) -> str:
    """Where SeaweedFS keeps a versioned S3 object in the filer: `<key>.versions/v_<versionId>`."""
    versions = client.list_object_versions(Bucket=s3["bucket"], Prefix=key)["Versions"]
    version = next(v for v in versions if v["Key"] == key)
    return f"{s3['filer_backdoor']}/buckets/{s3['bucket']}/{key}.versions/v_{version['VersionId']}"


def filer(method: str, url: str, data: bytes | None = None) -> int:
    request = urllib.request.Request(url, data=data, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def object_keys(client: Any, s3: dict[str, Any], prefix: str, kind: str) -> list[str]:
    listing = client.list_objects_v2(Bucket=s3["bucket"], Prefix=prefix).get("Contents", [])
    return sorted(item["Key"] for item in listing if f"/{kind}/" in item["Key"])


def exchange_ids_in_bucket(client: Any, s3: dict[str, Any], prefix: str, kind: str = "request") -> set[str]:
    from skillwarden_sidecar.recording.reader import iter_entries
    return {str(e["record"]["exchange_id"]) for e in iter_entries(client, s3["bucket"], prefix)
            if e["kind"] == kind}
