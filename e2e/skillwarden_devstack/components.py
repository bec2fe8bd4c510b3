"""How each real component of the local stack is started and when it counts as ready."""

from __future__ import annotations

import json
import secrets
import ssl
import urllib.request
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from skillwarden_devstack.pki import Pki
from skillwarden_devstack.processes import Running, free_port, spawn, wait_until
from skillwarden_devstack.tools import Binaries

DEV_BUCKET = "skillwarden-audit"
# As long as the example policies keep records (7 years): a sidecar refuses a bucket whose default
# retention is weaker than the retention it is configured with. The bucket lives in the state dir.
DEV_BUCKET_RETENTION_DAYS = 2555


def _get(url: str, token: str | None = None, ca: Path | None = None,
         timeout: float = 2.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url)  # noqa: S310 - loopback URLs built by this module
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    context = ssl.create_default_context(cafile=str(ca)) if ca else None
    with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310
        return int(response.status), bytes(response.read())


def start_etcd(bins: Binaries, state: Path) -> tuple[Running, str]:
    client, peer = free_port(), free_port()
    url = f"http://127.0.0.1:{client}"
    running = spawn("etcd", [
        str(bins.etcd), "--name", "skillwarden-dev", "--data-dir", str(state / "etcd"),
        "--listen-client-urls", url, "--advertise-client-urls", url,
        "--listen-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-cluster", f"skillwarden-dev=http://127.0.0.1:{peer}",
        "--quota-backend-bytes", str(2 * 1024**3),
    ], state / "logs" / "etcd.log")
    wait_until("etcd", lambda: _get(f"{url}/health")[0] == 200, running, 30, "healthy")
    return running, url


def start_apiserver(bins: Binaries, state: Path, pki: Pki, etcd_url: str,
                    admin_token: str) -> tuple[Running, str]:
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    running = spawn("kube-apiserver", [
        str(bins.kube_apiserver), f"--etcd-servers={etcd_url}", "--bind-address=127.0.0.1",
        f"--secure-port={port}", f"--tls-cert-file={pki.serving_cert}",
        f"--tls-private-key-file={pki.serving_key}", f"--client-ca-file={pki.ca_cert}",
        "--service-cluster-ip-range=10.0.0.0/24", f"--service-account-issuer={url}",
        f"--service-account-key-file={pki.sa_pub}", f"--service-account-signing-key-file={pki.sa_key}",
        f"--api-audiences={url},skillwarden", f"--token-auth-file={pki.tokens_csv}",
        "--authorization-mode=RBAC", "--disable-admission-plugins=ServiceAccount",
        "--allow-privileged=true", "--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none",
        f"--cert-dir={state / 'pki' / 'generated'}",
    ], state / "logs" / "kube-apiserver.log")
    wait_until("kube-apiserver",
               lambda: _get(f"{url}/readyz", admin_token, pki.ca_cert)[0] == 200, running, 120, "ready")
    return running, url


def start_opa(bins: Binaries, state: Path, name: str = "opa",
              config: dict[str, Any] | None = None) -> tuple[Running, str]:
    port = free_port()
    argv = [str(bins.opa), "run", "--server", f"--addr=127.0.0.1:{port}",
            "--diagnostic-addr=", "--log-level=info"]
    if config is not None:
        config_file = state / f"{name}-config.json"
        config_file.write_text(json.dumps(config))
        argv.append(f"--config-file={config_file}")
    running = spawn(name, argv, state / "logs" / f"{name}.log")
    url = f"http://127.0.0.1:{port}"
    wait_until(name, lambda: _get(f"{url}/health")[0] == 200, running, 30, "healthy")
    return running, url


def s3_client(endpoint: str, access_key: str, secret_key: str) -> Any:
    return boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=access_key, aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2},
                      connect_timeout=2, read_timeout=10,
                      request_checksum_calculation="when_required",
                      response_checksum_validation="when_required"),
    )


def start_s3(bins: Binaries, state: Path) -> tuple[Running, dict[str, Any]]:
    # The secret starts with a letter: a leading "-" would be read as a flag by CLIs given it.
    access_key, secret_key = "skw" + secrets.token_hex(8), "s" + secrets.token_urlsafe(24)
    s3_config = state / "s3-identities.json"
    s3_config.write_text(json.dumps({"identities": [{
        "name": "skillwarden-dev", "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    s3_config.chmod(0o600)
    ports = {name: free_port() for name in ("master", "volume", "filer", "s3")}
    grpc = {name: free_port() for name in ports}
    data = state / "seaweedfs"
    data.mkdir(parents=True, exist_ok=True)
    # Every port binds to loopback. The filer's HTTP port has no auth and can rewrite anything:
    # it is a storage back door (tests use it to tamper), never the WORM interface.
    running = spawn("s3", [
        str(bins.weed), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-master.telemetry=false", "-master.volumeSizeLimitMB=64", "-volume.max=20",
        f"-master.port={ports['master']}", f"-master.port.grpc={grpc['master']}",
        f"-volume.port={ports['volume']}", f"-volume.port.grpc={grpc['volume']}",
        f"-filer.port={ports['filer']}", f"-filer.port.grpc={grpc['filer']}",
        "-s3", f"-s3.port={ports['s3']}", f"-s3.port.grpc={grpc['s3']}", f"-s3.config={s3_config}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-metricsPort=0",
    ], state / "logs" / "s3.log")
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    client = s3_client(endpoint, access_key, secret_key)
    wait_until("s3", lambda: client.list_buckets() is not None, running, 90, "answering S3 requests")

    def bucket_ready() -> bool:
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if DEV_BUCKET not in existing:
            client.create_bucket(Bucket=DEV_BUCKET, ObjectLockEnabledForBucket=True)
        client.put_object_lock_configuration(Bucket=DEV_BUCKET, ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": DEV_BUCKET_RETENTION_DAYS}}})
        lock = client.get_object_lock_configuration(Bucket=DEV_BUCKET)["ObjectLockConfiguration"]
        return bool(lock.get("ObjectLockEnabled") == "Enabled")

    wait_until("s3", bucket_ready, running, 60, "serving a bucket with Object Lock")
    return running, {"endpoint": endpoint, "bucket": DEV_BUCKET, "access_key": access_key,
                     "secret_key": secret_key, "region": "us-east-1",
                     "filer_backdoor": f"http://127.0.0.1:{ports['filer']}"}


def start_prometheus(bins: Binaries, state: Path) -> tuple[Running, str]:
    port = free_port()
    prom_dir = state / "prometheus"
    prom_dir.mkdir(parents=True, exist_ok=True)
    targets = prom_dir / "targets.json"
    if not targets.exists():
        targets.write_text("[]")
    rules_dir = prom_dir / "rules"
    rules_dir.mkdir(exist_ok=True)
    # Targets and rule files are read from the state dir, so the demo and tests add their own
    # without restarting Prometheus (file_sd refresh, and /-/reload for rules).
    (prom_dir / "prometheus.yml").write_text(json.dumps({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules_dir / "*.yaml")],
        "scrape_configs": [{"job_name": "skillwarden", "file_sd_configs": [
            {"files": [str(targets)], "refresh_interval": "1s"}]}],
    }))
    running = spawn("prometheus", [
        str(bins.prometheus), f"--config.file={prom_dir / 'prometheus.yml'}",
        f"--storage.tsdb.path={prom_dir / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle", "--storage.tsdb.retention.time=1d",
    ], state / "logs" / "prometheus.log")
    url = f"http://127.0.0.1:{port}"
    wait_until("prometheus", lambda: _get(f"{url}/-/ready")[0] == 200, running, 60, "ready")
    return running, url
