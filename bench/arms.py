"""The arms of the comparison: each is a way for a client to reach the same fake upstream.

- `direct`      client → upstream (the baseline every "added" figure subtracts);
- `floor`       client → minimal aiohttp pass-through → upstream;
- `skillwarden` client → `skillwarden sidecar` (+ its OPA) → upstream, full pipeline;
- `litellm`     client → LiteLLM proxy (1 worker) → upstream.

Every proxy process is pinned to the system-under-test core (core 1), alone: the upstream and the
load generator share core 0. CPU and RSS are read from /proc for the arm's processes (and their
children), so a proxy's helpers (skillwarden's OPA, LiteLLM's workers) count against it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import load

BENCH = Path(__file__).resolve().parent
SUT_CORE = 1
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
LITELLM_VENV = Path(os.environ.get("SKILLWARDEN_LITELLM_VENV",
                                   Path.home() / ".cache" / "skillwarden" / "litellm-venv"))
# 1.107.0 was a compromised release; the version is pinned to the one the anchors were measured with.
LITELLM_REQUIREMENT = "litellm[proxy]==1.106.2"
LITELLM_KEY = "sk-bench-litellm-4f1c9e2a"  # non-default master key (LiteLLM refuses "sk-1234" in prod)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def descendants(pid: int) -> list[int]:
    found = [pid]
    for current in found:
        try:
            tasks = Path(f"/proc/{current}/task").iterdir()
            for task in tasks:
                children = (task / "children").read_text().split()
                found.extend(int(c) for c in children if int(c) not in found)
        except OSError:
            continue
    return found


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15 of stat)
    return total / CLOCK_TICKS


def memory_kib(pids: list[int], key: str) -> int:
    """Sum of one /proc/<pid>/status field (VmRSS now, VmHWM peak) over the processes."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}; log {log}:\n"
                               + log.read_text()[-3000:])
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answers; the status is the arm's business
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s; log {log}")


@dataclass
class Arm:
    name: str
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    extra_pids: list[int] = field(default_factory=list)  # helpers outside the SUT (e.g. S3)
    wiring: dict[str, str] = field(default_factory=dict)
    metrics_url: str = ""
    s3: dict[str, Any] = field(default_factory=dict)
    cleanup_dirs: list[Path] = field(default_factory=list)  # outside the work dir (e.g. on tmpfs)

    def pids(self) -> list[int]:
        found: list[int] = []
        for proc in self.procs:
            found.extend(descendants(proc.pid))
        return found

    def cpu_by_process(self) -> dict[str, float]:
        return {label: cpu_seconds(descendants(proc.pid))
                for label, proc in zip(self.labels, self.procs, strict=True)}

    def describe(self) -> dict[str, dict[str, float]]:
        """RSS now and peak of each process this arm started (with its children), in MiB."""
        out = {}
        for label, proc in zip(self.labels, self.procs, strict=True):
            pids = descendants(proc.pid)
            out[label] = {"rss_mib": memory_kib(pids, "VmRSS") / 1024,
                          "rss_peak_mib": memory_kib(pids, "VmHWM") / 1024,
                          "cpu_s": cpu_seconds(pids)}
        return out

    def spawn(self, argv: list[str], log: Path, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            proc = subprocess.Popen([*load.pinned(SUT_CORE), *argv], stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True)
        self.procs.append(proc)
        self.labels.append(log.stem)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()
        self.labels.clear()
        for directory in self.cleanup_dirs:
            shutil.rmtree(directory, ignore_errors=True)
        self.cleanup_dirs.clear()
        # SeaweedFS may sit on SIGTERM for a long time: escalate, never leave it behind.
        for pid in self.extra_pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_running(pid) for pid in self.extra_pids):
            time.sleep(0.1)
        for pid in self.extra_pids:
            if _running(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        for pid in self.extra_pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        self.extra_pids.clear()


def _ready_or_stop(arm: Arm, url: str, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    try:
        wait_http(url, timeout, proc, log)
    except BaseException:
        arm.stop()
        raise


def direct(upstream: str) -> Arm:
    return Arm("direct", url=upstream)


def floor(upstream: str, work: Path) -> Arm:
    arm = Arm("floor")
    port = free_port()
    log = work / "floor.log"
    proc = arm.spawn([sys.executable, str(BENCH / "floor_proxy.py"), f"--port={port}",
                      f"--upstream={upstream}"], log)
    arm.url = f"http://127.0.0.1:{port}"
    _ready_or_stop(arm, arm.url + "/healthz", 20, proc, log)
    return arm


def ensure_litellm(log: Path) -> Path:
    """The LiteLLM venv lives outside the checkout and outside the project venv (its pins clash
    with ours); it is created on first use and reused."""
    binary = LITELLM_VENV / "bin" / "litellm"
    marker = LITELLM_VENV / ".skillwarden-requirement"
    if binary.exists() and marker.exists() and marker.read_text() == LITELLM_REQUIREMENT:
        return binary
    print(f"installing {LITELLM_REQUIREMENT} into {LITELLM_VENV} (once, ~1 min)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
    with log.open("ab") as out:
        subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", LITELLM_REQUIREMENT],
                       check=True, stdout=out, stderr=subprocess.STDOUT)
    marker.write_text(LITELLM_REQUIREMENT)
    return binary


def litellm(upstream: str, work: Path, models: list[str]) -> Arm:
    binary = ensure_litellm(work / "litellm-install.log")
    config = work / "litellm.yaml"
    lines = ["model_list:"]
    for model in models:
        lines += [f"  - model_name: {model}", "    litellm_params:", f"      model: anthropic/{model}",
                  f"      api_base: {upstream}", "      api_key: sk-ant-bench-fake"]
    lines += ["general_settings:", f"  master_key: {LITELLM_KEY}",
              "litellm_settings:", "  telemetry: false"]
    config.write_text("\n".join(lines) + "\n")
    arm = Arm("litellm", headers={"x-api-key": LITELLM_KEY})
    port = free_port()
    log = work / "litellm.log"
    # One uvicorn worker, as the issue asks; the cost map ships inside the package (offline).
    proc = arm.spawn([str(binary), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
                      "--num_workers", "1"], log,
                     env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}, cwd=work)
    arm.url = f"http://127.0.0.1:{port}"
    _ready_or_stop(arm, arm.url + "/health/liveliness", 120, proc, log)
    return arm
