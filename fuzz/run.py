"""Run every atheris harness for a time budget and report executions, coverage and crashes.

    python fuzz/run.py --seconds 120 [--target sse --target jwt] [--jobs 1]

Needs the `fuzz` extra (`pip install -e .[fuzz]`, i.e. atheris). Each target keeps a corpus in
`fuzz/corpus/<target>/` (seeded from `fuzz/seeds/<target>/` when present) and writes crashing
inputs to `fuzz/crashes/<target>-*`. Exit status 1 when any target crashed.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGETS = ("sse", "request", "mask", "jwt", "admission", "policy")
# libFuzzer's final status line: "#123456 DONE cov: 812 ft: 2410 corp: 301/40Kb exec/s: 900 rss: 120Mb"
_STATUS = re.compile(r"#(\d+)\s+(?:DONE|pulse|NEW|REDUCE|INITED)\s+cov: (\d+) ft: (\d+)")


def run_target(target: str, seconds: int) -> dict[str, object]:
    corpus = HERE / "corpus" / target
    corpus.mkdir(parents=True, exist_ok=True)
    crashes = HERE / "crashes"
    crashes.mkdir(exist_ok=True)
    seeds = HERE / "seeds" / target
    argv = [
        sys.executable,
        str(HERE / "harness.py"),
        target,
        f"-max_total_time={seconds}",
        f"-artifact_prefix={crashes}/{target}-",
        "-print_final_stats=1",
        "-max_len=16384",
        str(corpus),
    ]
    if seeds.is_dir():
        argv.append(str(seeds))
    started = time.monotonic()
    completed = subprocess.run(
        argv, capture_output=True, text=True, timeout=seconds + 300, check=False, cwd=HERE
    )
    output = completed.stderr + completed.stdout
    matches = _STATUS.findall(output)
    executions, coverage, features = (int(x) for x in matches[-1]) if matches else (0, 0, 0)
    crashed = completed.returncode != 0
    result: dict[str, object] = {
        "target": target,
        "seconds": round(time.monotonic() - started, 1),
        "executions": executions,
        "coverage_edges": coverage,
        "features": features,
        "corpus": len(list(corpus.iterdir())),
        "crashed": crashed,
    }
    if crashed:
        result["output_tail"] = output[-3000:]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=60, help="time budget per target")
    parser.add_argument("--target", action="append", choices=TARGETS, help="repeatable; default: all")
    args = parser.parse_args(argv)
    results = [run_target(t, args.seconds) for t in (args.target or TARGETS)]
    for result in results:
        print(json.dumps(result), flush=True)
    return 1 if any(r["crashed"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
