"""Render the Helm chart with the stack's helm and apply it to the stack's kube-apiserver.

Used by the chart tests and the demo. Values go in as a YAML document (a values file), so callers
pass plain dicts instead of `--set` strings that need escaping.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from skillwarden_devstack.processes import StackError
from skillwarden_devstack.tools import KUBERNETES_VERSION, Binaries

CHART_DIR = Path(__file__).resolve().parents[2] / "charts" / "skillwarden"


def helm_template(bins: Binaries, release: str, namespace: str, values: Mapping[str, Any] | None = None,
                  args: Sequence[str] = (), include_crds: bool = True) -> subprocess.CompletedProcess[str]:
    """`helm template` (never raises on a refused render: the caller reads stderr)."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="skillwarden-values-") as values_file:
        yaml.safe_dump(dict(values or {}), values_file)
        values_file.flush()
        # A helm built from its Go module reports Kubernetes v1.20 unless told otherwise, which the
        # chart's kubeVersion (>= 1.29: native sidecars) refuses; the stack runs KUBERNETES_VERSION.
        command = [str(bins.helm), "template", release, str(CHART_DIR), "--namespace", namespace,
                   "--kube-version", KUBERNETES_VERSION.lstrip("v"), "-f", values_file.name, *args]
        if include_crds:
            command.append("--include-crds")
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def render(bins: Binaries, release: str, namespace: str, values: Mapping[str, Any] | None = None,
           args: Sequence[str] = (), include_crds: bool = True) -> str:
    """The rendered manifest; a refused render raises with helm's message (it says what to set)."""
    result = helm_template(bins, release, namespace, values, args, include_crds)
    if result.returncode != 0:
        raise StackError("chart", f"helm template refused the values: {result.stderr.strip()}")
    return result.stdout


def apply(bins: Binaries, kubeconfig: str, manifest: str, dry_run: bool = False,
          field_manager: str = "skillwarden") -> str:
    """`kubectl apply --server-side` (optionally `--dry-run=server`); raises with kubectl's error."""
    command = [str(bins.kubectl), "--kubeconfig", kubeconfig, "apply", "--server-side", "--force-conflicts",
               "--field-manager", field_manager, "-f", "-"]
    if dry_run:
        command.append("--dry-run=server")
    result = subprocess.run(command, input=manifest, capture_output=True, text=True, timeout=180, check=False)
    if result.returncode != 0:
        raise StackError("chart", f"kubectl apply --server-side failed: {result.stderr.strip()}")
    return result.stdout


def documents(manifest: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(manifest) if doc]


def operator_process_env(manifest: str, injection_file: Path, overrides: Mapping[str, str]) -> dict[str, str]:
    """The operator container's environment as the rendered Deployment sets it, for running the
    operator as a local process (the demo; tests): literal values as rendered, the ConfigMap's
    injection document written to `injection_file`, then `overrides` (loopback addresses, ports,
    namespace and pod name that the downward API would give)."""
    docs = documents(manifest)
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    configmap = next(d for d in docs
                     if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-injection"))
    injection_file.write_text(configmap["data"]["injection.json"])
    env = {e["name"]: str(e["value"]) for e in container["env"] if "value" in e}
    env["SKILLWARDEN_INJECTION_CONFIG"] = str(injection_file)
    env.update(overrides)
    return env


def operator_args(manifest: str) -> list[str]:
    """The operator container's args (`skillwarden <args>`)."""
    deployment = next(d for d in documents(manifest) if d["kind"] == "Deployment")
    return [str(a) for a in deployment["spec"]["template"]["spec"]["containers"][0]["args"]]
