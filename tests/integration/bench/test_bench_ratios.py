"""The sidecar's cost relative to the floor (a bare aiohttp pass-through), measured in one run.

Ratios only, never absolute times: both arms share the machine's noise, so the ratio holds on a
slow CI box as on a fast laptop. The LiteLLM ratio needs a ~750 MB venv (about a minute to
install), so it lives in the full run (`python bench/run.py`, docs/performance.md), not here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

# Measured skillwarden/floor non-streaming req/s at c=16, full pipeline, on the 2-core dev box:
# see docs/performance.md. The bound sits below the measured median by the run-to-run spread.
MIN_FLOOR_RATIO = 0.15


def test_skillwarden_throughput_is_a_fixed_fraction_of_the_floor(tmp_path: Path) -> None:
    out = tmp_path / "quick.json"
    done = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=240, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    doc = json.loads(out.read_text())
    for arm in ("floor", "skillwarden"):
        for row in doc["rounds"]:
            measured = row[arm]["nonstream_c16"]
            # Every request must have succeeded: a fast error path is not throughput.
            assert measured["non_2xx"] == 0 and measured["errors"] == 0, (arm, measured)
            assert measured["requests"] > 100, (arm, measured)
    ratio = doc["ratios"]["skillwarden/floor rps_c16"]
    assert ratio >= MIN_FLOOR_RATIO, (
        f"skillwarden does {ratio:.3f}× the floor's req/s (bound {MIN_FLOOR_RATIO}): "
        f"{json.dumps(doc['summary'], default=str)[:2000]}")
