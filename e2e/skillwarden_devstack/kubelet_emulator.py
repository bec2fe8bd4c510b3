"""Run a stored Pod's injected containers (`opa`, `skillwarden`) as local processes.

The local stack has a real API server but no kubelet, so pods stay Pending. This module plays the
kubelet for the two containers the webhook injected, from the pod exactly as the API server stored
it — the test that the injected args, env and volumes really produce a working sidecar:

- images are ignored: `skillwarden ...` runs the installed CLI, the `opa` container its entrypoint
  (the local `opa` binary);
- a pod shares one network namespace; here every container port the pod listens on (container
  ports, `--port`, `--admin-port`, OPA's `--addr`/`--diagnostic-addr`) is mapped to a free
  loopback port, consistently in every container's args and env (`0.0.0.0` becomes 127.0.0.1);
- volumes become directories under `root/volumes/<name>` (Secret data from the caller, emptyDirs,
  projected service-account tokens from a `token_factory`, e.g. the real TokenRequest API) and
  mount paths in args/env are rewritten to them;
- cluster DNS is a prefix map (`url_rewrites`: in-cluster URL -> local URL);
- downward-API env is resolved from the pod; Secret env/envFrom from the caller's Secrets;
- in-cluster API access: the `/var/run/secrets/kubernetes.io/serviceaccount` mount gets a
  kubeconfig next to its token (the client libraries read that fixed path, which a local process
  cannot have), passed as SKILLWARDEN_APPROVAL_KUBECONFIG;
- containers start in pod order (OPA first) and each must pass its readinessProbe (HTTP GET on
  the mapped port) before the next starts, like native sidecars with startup probes.

Processes get a minimal environment (PATH, HOME, LANG + the container's env), not the caller's.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from skillwarden_devstack.processes import Running, free_port, stop

INJECTED = ("opa", "skillwarden")
KUBE_SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
_LISTENER_FLAGS = ("--port=", "--admin-port=")
_ADDRESS_FLAGS = ("--addr=", "--diagnostic-addr=")

TokenFactory = Callable[[str | None, int], str]  # (audience or None for the API server, seconds)


class EmulationError(RuntimeError):
    """The pod cannot run here as stored (missing Secret, unsupported volume, probe failed)."""


@dataclass(frozen=True)
class Environment:
    secrets: Mapping[str, Mapping[str, bytes]] = field(default_factory=dict)  # name -> key -> data
    url_rewrites: Mapping[str, str] = field(default_factory=dict)  # cluster URL prefix -> local URL
    token_factory: TokenFactory | None = None
    api_server: str = ""  # what the in-cluster kubeconfig points at
    api_ca: bytes = b""
    executables: Mapping[str, str] = field(default_factory=dict)  # "skillwarden" / "opa" -> path
    extra_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # container -> env
    ready_timeout: float = 60.0


@dataclass
class EmulatedPod:
    name: str
    namespace: str
    root: Path
    ports: dict[int, int]
    processes: dict[str, Running]
    app_env: dict[str, str]  # the first app container's env, rewritten (ANTHROPIC_BASE_URL, ...)
    logs: dict[str, Path]

    def url(self, container_port: int) -> str:
        return f"http://127.0.0.1:{self.ports[container_port]}"

    def stop(self) -> None:
        for running in reversed(list(self.processes.values())):
            stop(running)

    def __enter__(self) -> EmulatedPod:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def opted_in_pod(service_account: str, native: bool | None = None) -> dict[str, Any]:
    """An opted-in pod as a ReplicaSet would create it (generateName, no namespace in the object),
    with the API-token volume the ServiceAccount admission plugin adds in a real cluster (the dev
    stack runs without that plugin)."""
    annotations = {"skillwarden.io/inject": "true"}
    if native is not None:
        annotations["skillwarden.io/native-sidecar"] = "true" if native else "false"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "generateName": "report-", "labels": {"app": "report", "skillwarden.io/inject": "true"},
        "annotations": annotations},
        "spec": {"serviceAccountName": service_account, "containers": [{
            "name": "app", "image": "example/report:1",
            "volumeMounts": [{"name": "kube-api-access-abcde", "mountPath": KUBE_SA_DIR, "readOnly": True}]}],
            "volumes": [{"name": "kube-api-access-abcde", "projected": {"sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                                            "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}}]}}


def create_stored_pod(core: Any, api: Any, namespace: str, pod: Mapping[str, Any]) -> dict[str, Any]:
    """Create `pod` through the real API server (admission included) and return it as stored."""
    created = core.create_namespaced_pod(namespace, pod)
    stored: dict[str, Any] = api.sanitize_for_serialization(
        core.read_namespaced_pod(created.metadata.name, namespace))
    return stored


def injected_containers(pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    spec = pod["spec"]
    found = [c for c in (spec.get("initContainers") or []) + spec["containers"] if c["name"] in INJECTED]
    if sorted(c["name"] for c in found) != sorted(INJECTED):
        raise EmulationError(f"pod has no injected {' and '.join(INJECTED)} containers (was it injected?)")
    # OPA first whatever the pod order: the sidecar is only ready once OPA serves the bundle (a
    # kubelet starts regular containers without waiting, so the order only matters here).
    return sorted(found, key=lambda c: INJECTED.index(c["name"]))


def app_containers(pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [c for c in pod["spec"]["containers"] if c["name"] not in INJECTED]


def _port_after(arg: str, prefix: str) -> int | None:
    if not arg.startswith(prefix):
        return None
    value = arg[len(prefix):].rsplit(":", 1)[-1]
    return int(value) if value.isdigit() else None


def listener_ports(pod: Mapping[str, Any]) -> set[int]:
    ports: set[int] = set()
    for container in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]:
        for entry in container.get("ports") or []:
            ports.add(int(entry["containerPort"]))
        for arg in container.get("args") or []:
            for prefix in (*_LISTENER_FLAGS, *_ADDRESS_FLAGS):
                port = _port_after(arg, prefix)
                if port:
                    ports.add(port)
    return ports


class _Rewriter:
    def __init__(self, ports: Mapping[int, int], mounts: Mapping[str, Path], urls: Mapping[str, str]) -> None:
        self.ports = ports
        self.mounts = sorted(mounts.items(), key=lambda item: -len(item[0]))  # longest path first
        self.urls = urls

    def __call__(self, text: str) -> str:
        for cluster_url, local_url in self.urls.items():
            text = text.replace(cluster_url.rstrip("/"), local_url.rstrip("/"))
        text = text.replace("0.0.0.0", "127.0.0.1").replace("localhost:", "127.0.0.1:")  # noqa: S104
        for flag in _LISTENER_FLAGS:
            port = _port_after(text, flag)
            if port is not None and port in self.ports:
                return f"{flag}{self.ports[port]}"
        for port, local in self.ports.items():
            text = text.replace(f"127.0.0.1:{port}", f"127.0.0.1:{local}")
        # A path is rewritten once, as a whole value (`--flag=/path/...` or `/path/...`): a local
        # directory may itself contain a mount path such as /tmp.
        flag, sep, value = text.partition("=") if text.startswith("--") else ("", "", text)
        for mount_path, local_dir in self.mounts:
            if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
                return f"{flag}{sep}{local_dir}{value[len(mount_path):]}"
        return text


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


def _materialize(volume: Mapping[str, Any], directory: Path, pod: Mapping[str, Any], namespace: str,
                 env: Environment) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    if "emptyDir" in volume:
        return
    if "secret" in volume:
        source = volume["secret"]
        data = env.secrets.get(source["secretName"])
        if data is None:
            raise EmulationError(f"volume {volume['name']}: Secret {source['secretName']!r} not provided "
                                 "(the kubelet would keep the pod in ContainerCreating)")
        items = source.get("items") or [{"key": k, "path": k} for k in data]
        for item in items:
            if item["key"] not in data:
                raise EmulationError(f"volume {volume['name']}: key {item['key']!r} missing in Secret "
                                     f"{source['secretName']!r}")
            _write(directory / item["path"], data[item["key"]], source.get("defaultMode", 0o644) & 0o777)
        return
    if "projected" in volume:
        mode = volume["projected"].get("defaultMode", 0o644) & 0o777
        for source in volume["projected"].get("sources") or []:
            if "serviceAccountToken" in source:
                token_source = source["serviceAccountToken"]
                if env.token_factory is None:
                    raise EmulationError(f"volume {volume['name']}: a service-account token is needed; "
                                         "pass token_factory")
                token = env.token_factory(token_source.get("audience"),
                                          int(token_source.get("expirationSeconds", 3600)))
                _write(directory / token_source["path"], token.encode(), mode)
            elif "configMap" in source and source["configMap"].get("name") == "kube-root-ca.crt":
                _write(directory / "ca.crt", env.api_ca, mode)
            elif "downwardAPI" in source:
                for item in source["downwardAPI"].get("items") or []:
                    value = _field(pod, namespace, item["fieldRef"]["fieldPath"])
                    _write(directory / item["path"], value.encode(), mode)
            elif "secret" in source:
                data = env.secrets.get(source["secret"]["name"], {})
                for item in source["secret"].get("items") or [{"key": k, "path": k} for k in data]:
                    _write(directory / item["path"], data[item["key"]], mode)
            else:
                raise EmulationError(f"volume {volume['name']}: projected source {sorted(source)} "
                                     "unsupported")
        return
    kinds = sorted(k for k in volume if k != "name")
    raise EmulationError(f"volume {volume['name']}: type {kinds} unsupported")


def _field(pod: Mapping[str, Any], namespace: str, path: str) -> str:
    metadata, spec = pod["metadata"], pod["spec"]
    values = {"metadata.name": metadata.get("name", ""), "metadata.namespace": namespace,
              "metadata.uid": metadata.get("uid", ""),
              "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
              "spec.nodeName": "kubelet-emulator", "status.podIP": "127.0.0.1", "status.hostIP": "127.0.0.1"}
    if path not in values:
        raise EmulationError(f"downward API field {path} unsupported")
    return str(values[path])


def _resolve_env(container: Mapping[str, Any], pod: Mapping[str, Any], namespace: str,
                 env: Environment) -> dict[str, str]:
    resolved: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        if "secretRef" in source:
            name = source["secretRef"]["name"]
            if name not in env.secrets:
                raise EmulationError(f"container {container['name']}: envFrom Secret {name!r} not provided")
            resolved.update({k: v.decode() for k, v in env.secrets[name].items()})
    for entry in container.get("env") or []:
        source = entry.get("valueFrom") or {}
        if not source:  # `value: ""` is stored without the key
            resolved[entry["name"]] = str(entry.get("value", ""))
            continue
        if "fieldRef" in source:
            resolved[entry["name"]] = _field(pod, namespace, source["fieldRef"]["fieldPath"])
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            resolved[entry["name"]] = env.secrets[ref["name"]][ref["key"]].decode()
        else:
            raise EmulationError(f"container {container['name']}: env {entry['name']} source unsupported")
    return resolved


def _argv(container: Mapping[str, Any], env: Environment) -> list[str]:
    command = list(container.get("command") or [])
    args = list(container.get("args") or [])
    if command and command[0] == "skillwarden":
        # The installed CLI, through the interpreter (a console script's /proc/<pid>/exe is the
        # interpreter, which is what process bookkeeping compares against).
        configured = env.executables.get("skillwarden")
        prefix = [configured] if configured else [sys.executable, "-m", "skillwarden_cli.main"]
        return [*prefix, *command[1:], *args]
    if not command and container["name"] == "opa":
        executable = env.executables.get("opa", "")
        if not executable:
            raise EmulationError("pass executables={'opa': <path of the opa binary>}")
        return [executable, *args]
    raise EmulationError(f"container {container['name']}: command {command[:1]} has no local equivalent")


def _in_cluster_kubeconfig(directory: Path, env: Environment) -> Path:
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "in-cluster",
              "clusters": [{"name": "in-cluster", "cluster": {
                  "server": env.api_server,
                  "certificate-authority-data": base64.b64encode(env.api_ca).decode()}}],
              "users": [{"name": "pod", "user": {"tokenFile": str(directory / "token")}}],
              "contexts": [{"name": "in-cluster", "context": {"cluster": "in-cluster", "user": "pod"}}]}
    path = directory.parent / f"{directory.name}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def _spawn(name: str, argv: list[str], env: dict[str, str], log: Path, cwd: Path) -> Running:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, cwd=cwd, start_new_session=True)
    return Running(name=name, pid=process.pid, argv0=argv[0], log=str(log))


def _wait_ready(container: Mapping[str, Any], running: Running, ports: Mapping[int, int],
                timeout: float) -> None:
    probe = (container.get("startupProbe") or container.get("readinessProbe") or {}).get("httpGet")
    if not probe:
        return
    url = f"http://127.0.0.1:{ports[int(probe['port'])]}{probe.get('path', '/')}"
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not running.alive():
            raise EmulationError(f"container {container['name']} exited before it was ready "
                                 f"(log: {running.log})")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if 200 <= response.status < 400:
                    return
        except urllib.error.HTTPError as error:
            last = f"HTTP {error.code} {error.read()[:300]!r}"
        except OSError as error:
            last = str(error)
        time.sleep(0.1)
    raise EmulationError(f"container {container['name']} not ready at {url} after {timeout:.0f}s "
                         f"({last}; log: {running.log})")


def start(pod: Mapping[str, Any], root: Path, env: Environment) -> EmulatedPod:
    """Start `opa` then `skillwarden` of the stored `pod`; stop them with `.stop()`."""
    namespace = pod["metadata"].get("namespace")
    if not namespace:
        raise EmulationError("the stored pod has no namespace")
    name = pod["metadata"].get("name") or "pod"
    root.mkdir(parents=True, exist_ok=True)
    ports = {port: free_port() for port in sorted(listener_ports(pod))}
    volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
    materialized: dict[str, Path] = {}
    emulated = EmulatedPod(name=name, namespace=namespace, root=root, ports=ports, processes={}, app_env={},
                           logs={})

    def mounts_of(container: Mapping[str, Any]) -> dict[str, Path]:
        mounts: dict[str, Path] = {}
        for mount in container.get("volumeMounts") or []:
            if mount.get("subPath"):
                raise EmulationError(f"container {container['name']}: subPath mounts unsupported")
            volume = volumes.get(mount["name"])
            if volume is None:
                raise EmulationError(f"container {container['name']}: volume {mount['name']!r} is not "
                                     "in the pod")
            if mount["name"] not in materialized:
                directory = root / "volumes" / mount["name"]
                _materialize(volume, directory, pod, namespace, env)
                materialized[mount["name"]] = directory
            mounts[mount["mountPath"]] = materialized[mount["name"]]
        return mounts

    try:
        for container in injected_containers(pod):
            mounts = mounts_of(container)
            rewrite = _Rewriter(ports, mounts, env.url_rewrites)
            variables = {k: rewrite(v) for k, v in _resolve_env(container, pod, namespace, env).items()}
            if "/tmp" in mounts:  # noqa: S108 - the container's /tmp emptyDir
                variables["TMPDIR"] = str(mounts["/tmp"])  # noqa: S108
            if KUBE_SA_DIR in mounts and env.api_server:
                variables.setdefault("SKILLWARDEN_APPROVAL_KUBECONFIG",
                                     str(_in_cluster_kubeconfig(mounts[KUBE_SA_DIR], env)))
            variables.update(env.extra_env.get(container["name"], {}))
            base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(root), "LANG": "C.UTF-8"}
            argv = [rewrite(arg) for arg in _argv(container, env)]
            log = root / "logs" / f"{container['name']}.log"
            running = _spawn(container["name"], argv, {**base, **variables}, log, root)
            emulated.processes[container["name"]] = running
            emulated.logs[container["name"]] = log
            _wait_ready(container, running, ports, env.ready_timeout)
        apps = app_containers(pod)
        if apps:
            rewrite = _Rewriter(ports, mounts_of(apps[0]), env.url_rewrites)
            emulated.app_env = {k: rewrite(v) for k, v in _resolve_env(apps[0], pod, namespace, env).items()}
    except BaseException:
        emulated.stop()
        raise
    return emulated


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - manual use
    """`python -m skillwarden_devstack.kubelet_emulator POD.json ROOT --secret name=key=file ...`"""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pod", type=Path)
    parser.add_argument("root", type=Path)
    parser.add_argument("--opa", required=True)
    parser.add_argument("--secret", action="append", default=[], help="NAME=KEY=FILE")
    parser.add_argument("--rewrite", action="append", default=[], help="CLUSTER_URL=LOCAL_URL")
    args = parser.parse_args(argv)
    secrets: dict[str, dict[str, bytes]] = {}
    for entry in args.secret:
        secret, key, path = entry.split("=", 2)
        secrets.setdefault(secret, {})[key] = Path(path).read_bytes()
    rewrites = dict(entry.split("=", 1) for entry in args.rewrite)
    pod = start(json.loads(args.pod.read_text()), args.root,
                Environment(secrets=secrets, url_rewrites=rewrites, executables={"opa": args.opa}))
    logs = {k: str(v) for k, v in pod.logs.items()}
    print(json.dumps({"ports": pod.ports, "app_env": pod.app_env, "logs": logs}))
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        pod.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
