"""Start, watch and stop the stack's background processes, each with its own log file.

A process is identified by PID *and* its command line, so a PID reused by the kernel after a crash
is never mistaken for ours (and never killed).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


class StackError(RuntimeError):
    """A component could not be brought up; names the component and where its log is."""

    def __init__(self, component: str, reason: str, log: Path | None = None) -> None:
        where = f" (log: {log})" if log else ""
        super().__init__(f"{component}: {reason}{where}")
        self.component = component
        self.log = log


@dataclass(frozen=True)
class Running:
    name: str
    pid: int
    argv0: str
    log: str

    def alive(self) -> bool:
        return process_matches(self.pid, self.argv0)


def process_matches(pid: int, argv0: str) -> bool:
    # The executable behind the PID, not its cmdline: the kernel may show an empty cmdline for
    # a process with a long argument list, and a recycled PID runs some other executable.
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state != "Z" and exe == os.path.realpath(argv0)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def spawn(name: str, argv: Sequence[str], log: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> Running:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        # A session of its own: `down` can stop the whole process group, and a Ctrl-C in the
        # terminal that ran `up` does not take the stack with it.
        proc = subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
        )
    return Running(name=name, pid=proc.pid, argv0=argv[0], log=str(log))


def wait_until(component: str, check: Callable[[], bool], running: Running | None,
               timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running is not None and not running.alive():
            raise StackError(component, f"exited before {what}", Path(running.log))
        try:
            if check():
                return
        except Exception:  # noqa: S110 - probes fail in many ways while a component starts
            pass
        time.sleep(0.1)
    raise StackError(component, f"not {what} after {timeout:.0f}s",
                     Path(running.log) if running else None)


def stop(running: Running, grace: float = 10.0) -> None:
    if not running.alive():
        return
    try:
        os.killpg(running.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not running.alive():
            _reap(running.pid)
            return
        time.sleep(0.05)
    try:
        os.killpg(running.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _reap(running.pid)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
