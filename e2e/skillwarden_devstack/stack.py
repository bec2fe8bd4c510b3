"""`skillwarden dev up | down | status`: the real local stack on loopback.

State lives in one directory (`state.json` + logs + data). `up` is idempotent: a healthy stack
is left alone; a stack left behind by a crash (dead or foreign PIDs) is stopped and cleaned
before a fresh start. A component that fails stops everything started so far.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path
from typing import Any

from skillwarden_devstack import components, pki
from skillwarden_devstack.processes import Running, StackError, stop
from skillwarden_devstack.tools import Binaries, cache_dir, ensure_all

KUBECONFIG_USERS = ("admin", "requester", "approver", "approver2", "outsider")
_ORDER = ("etcd", "kube-apiserver", "opa", "s3", "prometheus")


def default_state_dir() -> Path:
    configured = os.environ.get("SKILLWARDEN_STATE_DIR")
    return Path(configured) if configured else cache_dir() / "state" / "default"


def _state_file(state_dir: Path) -> Path:
    return state_dir / "state.json"


def read_state(state_dir: Path) -> dict[str, Any] | None:
    try:
        loaded: dict[str, Any] = json.loads(_state_file(state_dir).read_text())
    except (OSError, ValueError):
        return None
    return loaded


def _processes(state: dict[str, Any]) -> list[Running]:
    return [Running(**entry) for entry in state.get("processes", [])]


def is_healthy(state: dict[str, Any]) -> bool:
    running = _processes(state)
    return bool(running) and {r.name for r in running} >= set(_ORDER) and all(r.alive() for r in running)


def up(state_dir: Path | None = None, now: dt.datetime | None = None) -> dict[str, Any]:
    state_dir = state_dir or default_state_dir()
    existing = read_state(state_dir)
    if existing is not None and is_healthy(existing):
        return status_document(existing)
    if existing is not None or state_dir.exists():
        down(state_dir)  # stale: from a crash, or half-started
    bins = ensure_all()
    state_dir.mkdir(parents=True, exist_ok=True)
    started: list[Running] = []
    try:
        state = _start_all(bins, state_dir, started, now or dt.datetime.now(dt.UTC))
    except BaseException:
        for running in reversed(started):
            stop(running)
        _remove_all_but_logs(state_dir)  # the error names a log file: keep it readable
        raise
    _state_file(state_dir).write_text(json.dumps(state, indent=2))
    return status_document(state)


def _remove_all_but_logs(state_dir: Path) -> None:
    for entry in state_dir.iterdir():
        if entry.name != "logs":
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def _start_all(bins: Binaries, state_dir: Path, started: list[Running], now: dt.datetime) -> dict[str, Any]:
    keys = pki.create(state_dir / "pki", now)
    tokens = pki.tokens(keys)
    etcd, etcd_url = components.start_etcd(bins, state_dir)
    started.append(etcd)
    apiserver, api_url = components.start_apiserver(bins, state_dir, keys, etcd_url, tokens["admin"])
    started.append(apiserver)
    kubeconfigs = {}
    for user in KUBECONFIG_USERS:
        path = state_dir / "kubeconfigs" / f"{user}.yaml"
        path.parent.mkdir(exist_ok=True)
        pki.write_kubeconfig(path, api_url, keys.ca_cert, user, tokens[user])
        kubeconfigs[user] = str(path)
    opa, opa_url = components.start_opa(bins, state_dir)
    started.append(opa)
    s3, s3_info = components.start_s3(bins, state_dir)
    started.append(s3)
    prometheus, prom_url = components.start_prometheus(bins, state_dir)
    started.append(prometheus)
    return {
        "state_dir": str(state_dir),
        "apiserver": api_url,
        "ca_cert": str(keys.ca_cert),
        "ca_key": str(keys.ca_key),
        "service_account_signing_key": str(keys.sa_key),
        "kubeconfigs": kubeconfigs,
        "etcd": etcd_url,
        "opa": opa_url,
        "s3": s3_info,
        "prometheus": prom_url,
        "prometheus_targets": str(state_dir / "prometheus" / "targets.json"),
        "prometheus_rules_dir": str(state_dir / "prometheus" / "rules"),
        "binaries": {name: str(path) for name, path in vars(bins).items()},
        "processes": [vars(r) for r in started],
    }


def status_document(state: dict[str, Any]) -> dict[str, Any]:
    document = {key: value for key, value in state.items() if key != "processes"}
    document["processes"] = {r.name: {"pid": r.pid, "alive": r.alive(), "log": r.log}
                             for r in _processes(state)}
    document["state"] = "up" if is_healthy(state) else "degraded"
    return document


def status(state_dir: Path | None = None) -> dict[str, Any]:
    state_dir = state_dir or default_state_dir()
    state = read_state(state_dir)
    if state is None:
        return {"state": "down", "state_dir": str(state_dir)}
    return status_document(state)


def down(state_dir: Path | None = None) -> list[str]:
    """Stop only what we started (PID + command line match), then remove the state dir."""
    state_dir = state_dir or default_state_dir()
    state = read_state(state_dir)
    stopped = []
    if state is not None:
        extra = [Running(**entry) for entry in state.get("extra_processes", [])]
        for running in reversed(_processes(state) + extra):
            if running.alive():
                stop(running)
                stopped.append(running.name)
    shutil.rmtree(state_dir, ignore_errors=True)
    return stopped


def register_extra_process(state_dir: Path, running: Running) -> None:
    """Processes started on top of the stack (demo sidecar, operator) are stopped by `down` too."""
    state = read_state(state_dir)
    if state is None:
        raise StackError("dev", f"no stack at {state_dir}; run `skillwarden dev up` first")
    state.setdefault("extra_processes", []).append(vars(running))
    _state_file(state_dir).write_text(json.dumps(state, indent=2))


def stop_extra_processes(state_dir: Path) -> list[str]:
    """Stop what a previous demo started on top of the stack (operator, sidecar, OPA)."""
    state = read_state(state_dir)
    if state is None:
        return []
    stopped = []
    for entry in reversed(state.pop("extra_processes", [])):
        running = Running(**entry)
        if running.alive():
            stop(running)
            stopped.append(running.name)
    state.pop("sidecar", None)
    state.pop("metrics", None)
    _state_file(state_dir).write_text(json.dumps(state, indent=2))
    return stopped


def set_demo_endpoints(state_dir: Path, sidecar: str, metrics: str) -> None:
    """`status` shows where the demo's sidecar listens while it runs."""
    state = read_state(state_dir)
    if state is None:
        raise StackError("dev", f"no stack at {state_dir}")
    state.update({"sidecar": sidecar, "metrics": metrics})
    _state_file(state_dir).write_text(json.dumps(state, indent=2))


__all__ = ["StackError", "default_state_dir", "down", "register_extra_process", "set_demo_endpoints",
           "status", "stop_extra_processes", "up"]
