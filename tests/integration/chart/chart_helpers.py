"""Helpers for the chart tests: render with the pinned helm (skillwarden_devstack.chart)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from skillwarden_devstack import chart
from skillwarden_devstack.tools import Binaries

REPO = Path(__file__).resolve().parents[3]
CHART = chart.CHART_DIR
# The minimum a working install needs (injection on, so the provider key Secret must be named).
BASE_VALUES = ("--set", "providerKey.secretName=anthropic-api-key")


@dataclass(frozen=True)
class Rendered:
    returncode: int
    stdout: str
    stderr: str

    @property
    def documents(self) -> list[dict[str, Any]]:
        assert self.returncode == 0, self.stderr
        return [doc for doc in yaml.safe_load_all(self.stdout) if doc]

    def kinds(self) -> list[str]:
        return [doc["kind"] for doc in self.documents]

    def one(self, kind: str, name_suffix: str = "") -> dict[str, Any]:
        found = [d for d in self.documents
                 if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
        names = [d["metadata"]["name"] for d in found]
        assert len(found) == 1, f"expected one {kind} *{name_suffix}, got {names}"
        return found[0]


def helm(bins: Binaries, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(bins.helm), *args], capture_output=True, text=True, timeout=120,
                          check=False, cwd=cwd)


def render(bins: Binaries, *args: str, release: str = "skw", namespace: str = "skillwarden",
           base: Sequence[str] = BASE_VALUES) -> Rendered:
    result = chart.helm_template(bins, release, namespace, None, [*base, *args], include_crds=False)
    return Rendered(result.returncode, result.stdout, result.stderr)
