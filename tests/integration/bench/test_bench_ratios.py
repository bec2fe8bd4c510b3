"""The sidecar's cost relative to the floor (a bare aiohttp pass-through) and to LiteLLM's proxy,
measured in one run.

Ratios only, never absolute times: the arms share the machine's noise, so the ratio holds on a
slow CI box as on a fast laptop. LiteLLM runs from its own venv (~750 MB, about a minute to
install on a fresh machine, then reused from ~/.cache/skillwarden/litellm-venv).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

# skillwarden/floor requests per CPU-second at c=16 (both arms pinned to the same core, CPU from
# /proc/<pid>/stat of every process of the arm, the sidecar's OPA included). CPU per request is
# what the arm costs whatever else runs on the box; req/s under contention measures the box.
# Measured 0.20-0.32 with masking and recording on (docs/performance.md; the goal is 0.25);
# the bound sits below the run-to-run spread of a shared box, so it catches regressions, not noise.
MIN_FLOOR_CAPACITY_RATIO = 0.15
# skillwarden/LiteLLM requests per CPU-second: measured 23x in the full run (goal 20x).
MIN_LITELLM_CAPACITY_RATIO = 12.0


def test_skillwarden_costs_a_bounded_multiple_of_the_floor_and_a_fraction_of_litellm(tmp_path: Path) -> None:
    out = tmp_path / "quick.json"
    done = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--quick",
                           "--arms", "floor,skillwarden,litellm", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    doc = json.loads(out.read_text())
    for arm, least in (("floor", 100), ("skillwarden", 100), ("litellm", 10)):
        for row in doc["rounds"]:
            measured = row[arm]["nonstream_c16"]
            # A fast error path is not throughput: at most 1% refusals (the sidecar fails closed
            # with 503 when its OPA misses the 250 ms deadline on an overloaded box).
            assert measured["errors"] == 0, (arm, measured)
            assert measured["non_2xx"] <= measured["requests"] // 100, (arm, measured)
            assert measured["requests"] > least, (arm, measured)
    # The full pipeline really ran: the sidecar's own counters show allowed requests and masking.
    counters = doc["summary"]["skillwarden"]["sidecar_counters"]
    assert any('decision="allow"' in name and value > 100 for name, value in counters.items()), counters
    if doc["summary"]["skillwarden"]["wiring"]["masking"].startswith("on"):
        assert any(name.startswith("skillwarden_masked_entities_total") and value > 100
                   for name, value in counters.items()), counters
    if doc["summary"]["skillwarden"]["wiring"]["recording"].startswith("on"):
        assert counters["s3_objects_under_bench/"] > 0, counters  # records reached the WORM bucket
    litellm = doc["ratios"]["skillwarden/litellm capacity per core (CPU ms/request)"]
    assert litellm >= MIN_LITELLM_CAPACITY_RATIO, (
        f"skillwarden serves {litellm:.1f}× LiteLLM's requests per CPU-second "
        f"(bound {MIN_LITELLM_CAPACITY_RATIO})")
    ratio = doc["ratios"]["skillwarden/floor capacity per core (CPU ms/request)"]
    assert ratio >= MIN_FLOOR_CAPACITY_RATIO, (
        f"skillwarden serves {ratio:.3f}× the floor's requests per CPU-second "
        f"(bound {MIN_FLOOR_CAPACITY_RATIO}): {json.dumps(doc['summary'], default=str)[:2000]}")
