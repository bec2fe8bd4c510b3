"""Injection cost: `injection.plan` CPU time, webhook answer time, and the latency the webhook adds
to a real pod CREATE through the real kube-apiserver (labelled pod vs. unlabelled pod).

    python bench/bench_injection.py --state-dir /tmp/skw-bench   # brings the stack up if needed
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from skillwarden_devstack import stack as devstack
from skillwarden_devstack.processes import free_port, port_open, spawn, stop, wait_until
from skillwarden_operator import injection

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "tests" / "integration" / "injection" / "injection_webhook_app.py"
sys.path.insert(0, str(APP.parent))
from injection_support import mutating_configuration  # noqa: E402


def pod(labelled: bool, containers: int = 1) -> dict[str, Any]:
    labels = {"skillwarden.io/inject": "true"} if labelled else {}
    return {"metadata": {"generateName": "bench-", "labels": {"app": "bench", **labels},
                         "annotations": labels},
            "spec": {"serviceAccountName": "default", "containers": [
                {"name": f"c{i}", "image": "example/app:1", "env": [{"name": "A", "value": "b"}]}
                for i in range(containers)]}}


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_ms": round(statistics.median(ordered) * 1000, 3),
            "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 3), "n": len(ordered)}


def bench_plan() -> dict[str, Any]:
    settings = injection.InjectionSettings()
    out = {}
    for name, containers in (("1 container", 1), ("20 containers", 20)):
        template = pod(True, containers)
        samples = []
        for _ in range(300):
            started = time.perf_counter()
            injection.plan(template, "bench", settings)
            samples.append(time.perf_counter() - started)
        out[name] = percentiles(samples)
    return out


def bench_apiserver(status: dict[str, Any], rounds: int) -> dict[str, Any]:
    admin = k8s_config.new_client_from_config(config_file=status["kubeconfigs"]["admin"])
    core = k8s.CoreV1Api(admin)
    for namespace in ("bench-injection", "skillwarden-system"):
        try:
            core.create_namespace({"metadata": {"name": namespace}})
        except k8s.ApiException as error:
            if error.status != 409:
                raise
    port = free_port()
    name = f"bench-injection-{uuid.uuid4().hex[:6]}"
    registration = k8s.AdmissionregistrationV1Api(admin)
    configuration = mutating_configuration(f"https://127.0.0.1:{port}", None)
    configuration["metadata"]["name"] = name
    registration.create_mutating_webhook_configuration(configuration)
    env = {"KUBECONFIG": status["kubeconfigs"]["admin"], "INJECTION_TEST_WEBHOOK_PORT": str(port),
           "SKILLWARDEN_CERT_MODE": "secret", "SKILLWARDEN_NAMESPACE": "skillwarden-system",
           "SKILLWARDEN_WEBHOOK_SERVICE": "127.0.0.1",
           "SKILLWARDEN_WEBHOOK_TLS_SECRET": "bench-injection-tls",
           "SKILLWARDEN_WEBHOOK_CONFIGURATIONS": f"mutating/{name}", "PYTHONPATH": os.pathsep.join(sys.path)}
    log = Path(status["state_dir"]) / "logs" / f"{name}.log"
    process = spawn(name, [sys.executable, "-m", "kopf", "run", "--standalone", "-A", "-q", str(APP)], log,
                    env=env)
    try:
        wait_until(name, lambda: port_open(port), process, 60, "listening")

        def injected() -> bool:
            made = core.create_namespaced_pod("bench-injection", pod(True), dry_run="All")
            return any(c.name == "skillwarden" for c in made.spec.containers)

        wait_until(name, injected, process, 30, "registered")
        results: dict[str, list[float]] = {"labelled (webhook)": [], "unlabelled (no webhook)": []}
        for _ in range(rounds):  # interleaved, so drift affects both arms alike
            for arm, labelled in (("labelled (webhook)", True), ("unlabelled (no webhook)", False)):
                started = time.perf_counter()
                core.create_namespaced_pod("bench-injection", pod(labelled), dry_run="All")
                results[arm].append(time.perf_counter() - started)
        summary = {arm: percentiles(samples) for arm, samples in results.items()}
        summary["added_p50_ms"] = round(summary["labelled (webhook)"]["p50_ms"]
                                        - summary["unlabelled (no webhook)"]["p50_ms"], 3)
        return summary
    finally:
        registration.delete_mutating_webhook_configuration(name)
        stop(process)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    status = devstack.up(args.state_dir)
    report = {"plan": bench_plan(), "pod_create_dry_run": bench_apiserver(status, args.rounds)}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
