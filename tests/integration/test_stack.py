"""The local stack's components are the real thing and behave as the later issues rely on."""

from __future__ import annotations

import datetime as dt
import http.server
import io
import json
import socket
import subprocess
import tarfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from skillwarden_devstack import components, processes
from skillwarden_devstack import stack as devstack
from skillwarden_devstack.processes import StackError

CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.stacktest.skillwarden.io"},
    "spec": {"group": "stacktest.skillwarden.io", "scope": "Namespaced",
             "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
             "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                 "type": "object", "properties": {"spec": {"type": "object", "properties": {
                     "size": {"type": "integer"}}}}}}}]},
}


def api(stack: dict[str, Any], user: str) -> k8s.ApiClient:
    return k8s_config.new_client_from_config(config_file=stack["kubeconfigs"][user])


def test_crd_established_object_round_trip_and_rbac_denies_outsider(stack: dict[str, Any]) -> None:
    admin = api(stack, "admin")
    k8s.ApiextensionsV1Api(admin).create_custom_resource_definition(CRD)
    deadline = time.monotonic() + 30
    established = False
    while time.monotonic() < deadline and not established:
        crd = k8s.ApiextensionsV1Api(admin).read_custom_resource_definition(CRD["metadata"]["name"])
        established = any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])
        time.sleep(0.2)
    assert established
    objects = k8s.CustomObjectsApi(admin)
    body = {"apiVersion": "stacktest.skillwarden.io/v1", "kind": "Widget",
            "metadata": {"name": "w1"}, "spec": {"size": 3}}
    objects.create_namespaced_custom_object("stacktest.skillwarden.io", "v1", "default", "widgets", body)
    read = objects.get_namespaced_custom_object("stacktest.skillwarden.io", "v1", "default", "widgets", "w1")
    assert read["spec"] == {"size": 3}

    # requester may read widgets once a Role says so; outsider has no binding: 403.
    rbac = k8s.RbacAuthorizationV1Api(admin)
    rbac.create_namespaced_role("default", {"metadata": {"name": "widget-reader"}, "rules": [
        {"apiGroups": ["stacktest.skillwarden.io"], "resources": ["widgets"], "verbs": ["get", "list"]}]})
    rbac.create_namespaced_role_binding("default", {
        "metadata": {"name": "widget-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "widget-reader"},
        "subjects": [{"kind": "User", "name": "requester", "apiGroup": "rbac.authorization.k8s.io"}]})
    deadline = time.monotonic() + 10
    while True:
        try:
            k8s.CustomObjectsApi(api(stack, "requester")).get_namespaced_custom_object(
                "stacktest.skillwarden.io", "v1", "default", "widgets", "w1")
            break
        except k8s.ApiException as error:
            if error.status != 403 or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    with pytest.raises(k8s.ApiException) as denied:
        k8s.CustomObjectsApi(api(stack, "outsider")).get_namespaced_custom_object(
            "stacktest.skillwarden.io", "v1", "default", "widgets", "w1")
    assert denied.value.status == 403


class _BundleHandler(http.server.BaseHTTPRequestHandler):
    bundle = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(len(self.bundle)))
        self.end_headers()
        self.wfile.write(self.bundle)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _bundle() -> bytes:
    files = {
        ".manifest": json.dumps({"revision": "stack-test-1", "roots": ["stacktest"]}).encode(),
        "policy.rego": (b"package stacktest\n\ndefault allow := false\n\n"
                        b"allow if input.user == data.stacktest.admin\n"),
        "data.json": json.dumps({"stacktest": {"admin": "alice"}}).encode(),
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


@pytest.fixture
def bundle_server() -> Iterator[str]:
    handler = type("Handler", (_BundleHandler,), {"bundle": _bundle()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_opa_loads_bundle_over_http_and_answers(stack: dict[str, Any], bundle_server: str,
                                                tmp_path: Path) -> None:
    bins = devstack.ensure_all()
    running, url = components.start_opa(bins, tmp_path, "opa-bundle", {
        "services": {"bundles": {"url": bundle_server}},
        "bundles": {"stacktest": {"service": "bundles", "resource": "/bundle.tar.gz",
                                  "polling": {"min_delay_seconds": 1, "max_delay_seconds": 2}}}})
    try:
        processes.wait_until("opa", lambda: urllib.request.urlopen(f"{url}/health?bundles").status == 200,
                             running, 20, "bundle loaded")

        def ask(user: str) -> Any:
            request = urllib.request.Request(f"{url}/v1/data/stacktest/allow", method="POST",
                                             data=json.dumps({"input": {"user": user}}).encode())
            return json.load(urllib.request.urlopen(request))["result"]

        assert ask("alice") is True
        assert ask("mallory") is False
    finally:
        processes.stop(running)


def test_s3_object_lock_is_enforced(stack: dict[str, Any]) -> None:
    s3 = stack["s3"]
    client = components.s3_client(s3["endpoint"], s3["access_key"], s3["secret_key"])
    until = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    put = client.put_object(Bucket=s3["bucket"], Key="locktest/record.json", Body=b"{}",
                            ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until,
                            ChecksumAlgorithm="SHA256")
    version = put["VersionId"]
    with pytest.raises(ClientError) as deleted:
        client.delete_object(Bucket=s3["bucket"], Key="locktest/record.json", VersionId=version)
    assert deleted.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ClientError) as shortened:
        client.put_object_retention(Bucket=s3["bucket"], Key="locktest/record.json", VersionId=version,
                                    Retention={"Mode": "COMPLIANCE",
                                               "RetainUntilDate": until - dt.timedelta(hours=12)})
    assert shortened.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    client.delete_object(Bucket=s3["bucket"], Key="locktest/record.json")
    versions = client.list_object_versions(Bucket=s3["bucket"], Prefix="locktest/")
    assert [m["IsLatest"] for m in versions.get("DeleteMarkers", [])] == [True]
    assert [v["VersionId"] for v in versions["Versions"]] == [version]
    kept = client.get_object(Bucket=s3["bucket"], Key="locktest/record.json", VersionId=version)
    assert kept["Body"].read() == b"{}"


def test_prometheus_scrapes_a_local_target(stack: dict[str, Any]) -> None:
    class Metrics(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"# TYPE stacktest_up gauge\nstacktest_up{component=\"probe\"} 1\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        Path(stack["prometheus_targets"]).write_text(json.dumps(
            [{"targets": [f"127.0.0.1:{server.server_address[1]}"], "labels": {"job": "stacktest"}}]))
        promtool = stack["binaries"]["promtool"]
        deadline = time.monotonic() + 30
        output = ""
        while time.monotonic() < deadline:
            output = subprocess.run([promtool, "query", "instant", stack["prometheus"], "stacktest_up"],
                                    capture_output=True, text=True, check=False).stdout
            if "stacktest_up" in output:
                break
            time.sleep(0.5)
        assert 'component="probe"' in output and "=> 1" in output
    finally:
        server.shutdown()
        Path(stack["prometheus_targets"]).write_text("[]")


def _our_pids(state: dict[str, Any]) -> list[int]:
    return [p["pid"] for p in state["processes"].values() if p["alive"]]


def test_up_is_idempotent_and_down_stops_everything(tmp_path: Path) -> None:
    first = devstack.up(tmp_path / "s")
    second = devstack.up(tmp_path / "s")
    assert first["state"] == second["state"] == "up"
    assert _our_pids(first) == _our_pids(second) and len(_our_pids(first)) == 5
    pids = _our_pids(first)
    devstack.down(tmp_path / "s")
    assert not any(Path(f"/proc/{pid}").exists() and
                   Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z" for pid in pids)
    assert not (tmp_path / "s").exists()


def test_stale_state_from_a_crash_is_cleaned_and_restarted(tmp_path: Path) -> None:
    first = devstack.up(tmp_path / "s")
    try:
        etcd = first["processes"]["etcd"]["pid"]
        processes.os.kill(etcd, 9)
        time.sleep(0.3)
        assert devstack.status(tmp_path / "s")["state"] == "degraded"
        again = devstack.up(tmp_path / "s")
        assert again["state"] == "up"
        assert again["processes"]["etcd"]["pid"] != etcd
    finally:
        devstack.down(tmp_path / "s")


def test_port_in_use_names_the_component_and_its_log(tmp_path: Path) -> None:
    bins = devstack.ensure_all()
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    original = components.free_port
    components.free_port = lambda: port  # every port the component asks for is the taken one
    try:
        with pytest.raises(StackError) as failure:
            components.start_opa(bins, tmp_path, "opa-port-test")
    finally:
        components.free_port = original
        blocker.close()
    assert failure.value.component == "opa-port-test"
    assert failure.value.log is not None and failure.value.log.exists()
    assert str(failure.value.log) in str(failure.value)
