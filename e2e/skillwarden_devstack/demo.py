"""The README's main-job command: bring the local stack up and run a governed session through it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from skillwarden_devstack import stack


def run(state_dir: Path | None = None) -> dict[str, Any]:
    print("[demo] bringing the local stack up (first run builds kube-apiserver, opa and helm)")
    return stack.up(state_dir)
