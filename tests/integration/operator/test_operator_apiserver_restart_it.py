"""The API server restarting under a running operator (a private etcd + kube-apiserver, so the
shared stack is never disturbed): the bundle service keeps serving the last bundle — still
current, no policy can change meanwhile — and changes made after the restart are compiled."""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from operator_it_helpers import CRD, example, http_get

from skillwarden_devstack import components, pki, processes, tools
from skillwarden_devstack.processes import Running

API = ("skillwarden.io", "v1alpha1")


@pytest.fixture
def private_cluster(tmp_path: Path) -> Iterator[dict[str, Any]]:
    bins = tools.ensure_all()
    keys = pki.create(tmp_path / "pki", dt.datetime.now(dt.UTC))
    tokens = pki.tokens(keys)
    started: list[Running] = []
    try:
        etcd, etcd_url = components.start_etcd(bins, tmp_path)
        started.append(etcd)
        apiserver, url = components.start_apiserver(bins, tmp_path, keys, etcd_url, tokens["admin"])
        started.append(apiserver)
        kubeconfig = tmp_path / "admin.yaml"
        pki.write_kubeconfig(kubeconfig, url, keys.ca_cert, "admin", tokens["admin"])
        yield {"apiserver": apiserver, "url": url, "kubeconfig": str(kubeconfig), "token": tokens["admin"],
               "ca": keys.ca_cert, "started": started, "dir": tmp_path}
    finally:
        for running in reversed(started):
            processes.stop(running)


def _api_ready(url: str, token: str, ca: Path) -> bool:
    import ssl
    import urllib.request

    request = urllib.request.Request(f"{url}/readyz", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=2, context=ssl.create_default_context(cafile=str(ca))) as r:
        return bool(r.status == 200)


def test_operator_survives_an_apiserver_restart(private_cluster: dict[str, Any], tmp_path: Path) -> None:
    api = k8s_config.new_client_from_config(config_file=private_cluster["kubeconfig"])
    extensions = k8s.ApiextensionsV1Api(api)
    extensions.create_custom_resource_definition(yaml.safe_load(CRD.read_text()))

    def established() -> bool:
        crd = extensions.read_custom_resource_definition("skillpolicies.skillwarden.io")
        return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])

    processes.wait_until("crd", established, None, 30, "established")
    namespace = "restart"
    k8s.CoreV1Api(api).create_namespace({"metadata": {"name": namespace}})
    objects = k8s.CustomObjectsApi(api)
    policy = example("skillpolicy-finance.yaml", namespace)
    objects.create_namespaced_custom_object(*API, namespace, "skillpolicies", policy)

    port = processes.free_port()
    operator = processes.spawn("operator-restart", [
        sys.executable, "-m", "skillwarden_cli.main", "operator", "--bundle-port", str(port),
        "--admission", "false",
    ], tmp_path / "operator.log", env={"KUBECONFIG": private_cluster["kubeconfig"]})
    private_cluster["started"].append(operator)
    bundle_url = f"http://127.0.0.1:{port}/bundles/{namespace}.tar.gz"

    def revision() -> str | None:
        found = objects.get_namespaced_custom_object(*API, namespace, "skillpolicies", "finance-reporting")
        status = found.get("status") or {}
        return status.get("bundleRevision")

    processes.wait_until("operator", lambda: revision() is not None, operator, 30, "compiled the policy")
    first = revision()
    code, headers, before = http_get(bundle_url)
    assert (code, headers["ETag"]) == (200, f'"{first}"')

    # Stop the API server; the operator keeps running and keeps serving the (still current) bundle.
    apiserver: Running = private_cluster["apiserver"]
    argv = Path(f"/proc/{apiserver.pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    processes.stop(apiserver)
    time.sleep(3)
    assert operator.alive()
    code, headers, during = http_get(bundle_url)
    assert (code, headers["ETag"], during) == (200, f'"{first}"', before)
    assert http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200

    restarted = processes.spawn("kube-apiserver-restarted", [a.decode() for a in argv],
                                tmp_path / "kube-apiserver-restarted.log")
    private_cluster["started"].insert(1, restarted)
    url, token, ca = private_cluster["url"], private_cluster["token"], private_cluster["ca"]
    processes.wait_until("kube-apiserver", lambda: _api_ready(url, token, ca), restarted, 120, "ready")
    # A change after the restart: the operator's watches reconnect and it is compiled.
    edited = objects.get_namespaced_custom_object(*API, namespace, "skillpolicies", "finance-reporting")
    edited["spec"]["subjects"][0]["skills"].append({"type": "anthropic", "id": "docx"})
    started = time.monotonic()
    objects.replace_namespaced_custom_object(*API, namespace, "skillpolicies", "finance-reporting", edited)
    processes.wait_until("operator", lambda: http_get(bundle_url)[1].get("ETag") not in (None, f'"{first}"'),
                         operator, 90, "serving the policy edited after the API server restart")
    print(f"\nedit after API server restart -> new bundle served: {time.monotonic() - started:.1f} s")
    processes.wait_until("operator", lambda: revision() not in (None, first), operator, 30, "status updated")
    assert http_get(bundle_url)[1]["ETag"] == f'"{revision()}"'
