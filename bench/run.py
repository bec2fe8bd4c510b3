"""skillwarden side-by-side benchmark: direct / floor / skillwarden / LiteLLM, same session.

    python bench/run.py            # full run, ~4-5 min on 2 cores, writes bench/results/full.json
    python bench/run.py --quick    # ~40 s: floor and skillwarden only, throughput at c=16

Method (docs/performance.md): the fake upstream and the load generator run on core 0, each proxy
alone on core 1; rounds are interleaved (arm order rotates every round); throughput figures are
medians of rounds; latency percentiles pool the samples of all rounds; "added" figures subtract
the direct arm measured in the same round.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import arms as arms_mod  # noqa: E402
import load  # noqa: E402
from upstream import model_name  # noqa: E402

RESULTS = BENCH / "results"
OVERHEAD = model_name()
SHORT = model_name(20, 5)        # added-TTFT runs: many streams per second, real waits
REALISTIC = model_name(300, 20)  # concurrency growth: streams that stay open ~0.5 s
MODELS = [OVERHEAD, SHORT, REALISTIC]
EVENTS = 200  # content_block_delta events per stream in the events/s measurement
FILLER = ("Revenue grew four percent in the northern region while logistics costs stayed flat; "
          "please summarise the drivers and list the open risks for the finance review. ")


def prompt(size: int) -> str:
    head = "Summarise the quarterly report for alice.smith@example.com. "
    body = (FILLER * (size // len(FILLER) + 1))[: max(0, size - len(head))]
    return head + body


def request_body(size: int = 1024, model: str = OVERHEAD, stream: bool = False,
                 max_tokens: int = 16) -> bytes:
    return orjson.dumps({"model": model, "max_tokens": max_tokens, "stream": stream,
                         "messages": [{"role": "user", "content": prompt(size)}]})


def pin_self() -> bool:
    if len(os.sched_getaffinity(0)) < 2:
        print("WARNING: fewer than 2 cores: nothing is pinned, ratios are still comparable", flush=True)
        return False
    os.sched_setaffinity(0, {load.GENERATOR_CORE})
    return True


class Bench:
    def __init__(self, arms: list[arms_mod.Arm], seconds: float) -> None:
        self.arms = arms
        self.seconds = seconds
        self.by_name = {arm.name: arm for arm in arms}

    def wrk(self, arm: arms_mod.Arm, body: bytes, connections: int,
            seconds: float | None = None) -> dict[str, Any]:
        pids = arm.pids()
        cpu_before = arms_mod.cpu_seconds(pids)
        by_process = arm.cpu_by_process()
        result = load.run_wrk(arm.url + "/v1/messages", body,
                              {"content-type": "application/json", **arm.headers}, connections,
                              seconds or self.seconds)
        cpu = arms_mod.cpu_seconds(pids) - cpu_before
        out = result.as_dict()
        if pids:
            out["sut_cpu_s"] = cpu
            out["cpu_ms_per_request"] = cpu * 1000 / result.requests if result.requests else None
            out["sut_core_utilisation"] = cpu / result.seconds if result.seconds else None
            if len(by_process) > 1 and result.requests:
                # Which process of the arm spends it (sidecar vs its OPA): CPU per request is far
                # less sensitive to other load on the machine than throughput is.
                out["cpu_ms_per_request_by_process"] = {
                    label: (now - by_process[label]) * 1000 / result.requests
                    for label, now in arm.cpu_by_process().items()}
        if result.non_2xx or result.errors:
            out["warning"] = (f"{result.non_2xx} non-2xx {result.statuses}, {result.errors} socket "
                              f"errors; first: {result.first_error_body[:200]}")
            print(f"  WARNING {arm.name}: {out['warning']}", flush=True)
        return out

    def streams(self, arm: arms_mod.Arm, body: bytes, concurrency: int, seconds: float,
                min_streams: int = 0, sample_rss: bool = False) -> dict[str, Any]:
        pids = arm.pids()
        peak = {"rss_kib": arms_mod.memory_kib(pids, "VmRSS")}

        async def go() -> load.StreamResult:
            task = asyncio.ensure_future(load.run_streams(
                arm.url + "/v1/messages", body, {"content-type": "application/json", **arm.headers},
                concurrency, seconds, min_streams))
            while sample_rss and not task.done():
                peak["rss_kib"] = max(peak["rss_kib"], arms_mod.memory_kib(pids, "VmRSS"))
                await asyncio.sleep(0.05)
            return await task

        result = asyncio.run(go())
        out: dict[str, Any] = {"streams": result.streams, "errors": result.errors,
                               "events": result.events, "ttft_ms": result.ttft_ms}
        if result.errors:
            out["first_error"] = result.first_error[:300]
            print(f"  WARNING {arm.name}: {result.errors} stream errors: {result.first_error[:200]}",
                  flush=True)
        if sample_rss and pids:
            out["rss_peak_during_mib"] = round(peak["rss_kib"] / 1024, 1)
        return out


def rotated(items: list[arms_mod.Arm], shift: int) -> list[arms_mod.Arm]:
    shift %= len(items)
    return items[shift:] + items[:shift]


def run_round(bench: Bench, index: int, quick: bool) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for arm in rotated(bench.arms, index):
        print(f"round {index + 1}: {arm.name}", flush=True)
        row: dict[str, Any] = {}
        body = request_body()
        for c in ([16] if quick else [1, 16, 64]):
            row[f"nonstream_c{c}"] = bench.wrk(arm, body, c)
        if not quick:
            row["sse_events"] = bench.wrk(arm, request_body(stream=True, max_tokens=EVENTS), 16)
            short = request_body(model=SHORT, stream=True, max_tokens=8)
            row["ttft_c1"] = bench.streams(arm, short, 1, bench.seconds)
            row["ttft_c16"] = bench.streams(arm, short, 16, bench.seconds)
        out[arm.name] = row
    return out


def growth(bench: Bench, seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {"prompt_bytes": {}, "concurrent_streams": {}}
    for size in (1024, 10 * 1024, 100 * 1024):
        print(f"growth: prompt {size // 1024} KiB", flush=True)
        body = request_body(size)
        out["prompt_bytes"][str(size)] = {arm.name: bench.wrk(arm, body, 16, seconds) for arm in bench.arms}
    realistic = request_body(model=REALISTIC, stream=True, max_tokens=10)
    for concurrency in (1, 16, 64, 256):
        print(f"growth: {concurrency} concurrent streams", flush=True)
        out["concurrent_streams"][str(concurrency)] = {
            # One wave per worker at least; 1 s keeps the full run within 5 minutes.
            arm.name: bench.streams(arm, realistic, concurrency, 1.0, min_streams=concurrency,
                                    sample_rss=True)
            for arm in bench.arms}
    return out


# --- summary --------------------------------------------------------------------------------

def median(values: list[float]) -> float | None:
    clean = [v for v in values if v is not None]
    return statistics.median(clean) if clean else None


def summarise(rounds: list[dict[str, dict[str, Any]]], names: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name in names:
        rows = [r[name] for r in rounds]
        arm: dict[str, Any] = {}
        for key in rows[0]:
            if key.startswith("nonstream_"):
                c = key.removeprefix("nonstream_")
                arm[f"rps_{c}"] = median([r[key]["rps"] for r in rows])
                arm[f"p50_ms_{c}"] = median([r[key]["p50_ms"] for r in rows])
                arm[f"p99_ms_{c}"] = median([r[key]["p99_ms"] for r in rows])
                if "cpu_ms_per_request" in rows[0][key]:
                    arm[f"cpu_ms_per_request_{c}"] = median([r[key]["cpu_ms_per_request"] for r in rows])
                for label in rows[0][key].get("cpu_ms_per_request_by_process", {}):
                    arm[f"cpu_ms_per_request_{c}_{label}"] = median(
                        [r[key]["cpu_ms_per_request_by_process"][label] for r in rows])
            elif key == "sse_events":
                arm["sse_events_per_s"] = median([r[key]["rps"] * EVENTS for r in rows])
                arm["sse_cpu_us_per_event"] = median(
                    [r[key]["cpu_ms_per_request"] * 1000 / EVENTS for r in rows
                     if r[key].get("cpu_ms_per_request") is not None])
            elif key.startswith("ttft_"):
                samples = [s for r in rows for s in r[key]["ttft_ms"]]
                arm[f"{key}_p50_ms"] = load.percentile(samples, 50)
                arm[f"{key}_p99_ms"] = load.percentile(samples, 99)
                arm[f"{key}_samples"] = len(samples)
        summary[name] = arm
    if "direct" in summary:
        base = summary["direct"]
        for name in names:
            if name == "direct":
                continue
            arm = summary[name]
            for key in list(arm):
                if (key.startswith(("p50_ms_c1", "p99_ms_c1")) and key.endswith("c1")) or (
                        key.startswith("ttft_") and key.endswith(("p50_ms", "p99_ms"))):
                    if base.get(key) is not None and arm[key] is not None:
                        arm["added_" + key] = arm[key] - base[key]
    return summary


def ratios(summary: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for arm in summary.values():
        cpu = arm.get("cpu_ms_per_request_c16")
        if cpu:
            # What one dedicated core would sustain: CPU per request is what the arm costs
            # whatever else runs on the machine; req/s is only as good as the cores are idle.
            arm["capacity_rps_per_core"] = 1000 / cpu
        per_event = arm.get("sse_cpu_us_per_event")
        if per_event:
            arm["sse_capacity_events_per_core"] = 1e6 / per_event
    sw = summary.get("skillwarden")
    if not sw:
        return out
    for other in ("floor", "litellm"):
        theirs = summary.get(other, {}).get("capacity_rps_per_core")
        if sw.get("capacity_rps_per_core") and theirs:
            out[f"skillwarden/{other} capacity per core (CPU ms/request)"] = (
                sw["capacity_rps_per_core"] / theirs)
    for other in ("floor", "litellm"):
        if other in summary:
            for key in ("rps_c1", "rps_c16", "rps_c64"):
                if sw.get(key) and summary[other].get(key):
                    out[f"skillwarden/{other} {key}"] = sw[key] / summary[other][key]
    return out


# --- orchestration --------------------------------------------------------------------------

@contextlib.contextmanager
def upstream_server(work: Path) -> Iterator[str]:
    port = arms_mod.free_port()
    log = work / "upstream.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([*load.pinned(load.GENERATOR_CORE), sys.executable,
                                 str(BENCH / "upstream.py"), f"--port={port}"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while not arms_mod.port_open(port):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"fake upstream did not start; log {log}")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


ArmFactory = Callable[[str, Path], arms_mod.Arm]


def arm_factories(policy_rules: int, spool: str = "memory") -> dict[str, ArmFactory]:
    def skillwarden(upstream: str, work: Path) -> arms_mod.Arm:
        import sw_arm
        return sw_arm.start(upstream, work, policy_rules, spool)

    return {
        "direct": lambda upstream, work: arms_mod.direct(upstream),
        "floor": arms_mod.floor,
        "skillwarden": skillwarden,
        "litellm": lambda upstream, work: arms_mod.litellm(upstream, work, MODELS),
    }


def decision_growth(work: Path, seconds: float) -> dict[str, Any]:
    import sw_arm
    return sw_arm.decision_growth(work, seconds)


def check_arm(arm: arms_mod.Arm) -> None:
    """One serial request per arm and profile before load: a misconfigured arm (a policy that
    denies, a wrong key) must stop the run, not be measured as a fast error path."""
    for body in (request_body(), request_body(model=SHORT, stream=True, max_tokens=2)):
        request = urllib.request.Request(arm.url + "/v1/messages", data=body, method="POST",
                                         headers={"content-type": "application/json", **arm.headers})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                answer = response.read()
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"{arm.name} refused the bench request: {error.code} "
                               f"{error.read()[:500]!r}") from None
        if b"msg_bench01" not in answer:
            raise RuntimeError(f"{arm.name} answered something else: {answer[:300]!r}")


def growth_markdown(doc: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    grown = doc.get("growth") or {}
    if grown.get("prompt_bytes"):
        sizes = list(grown["prompt_bytes"])
        names = list(grown["prompt_bytes"][sizes[0]])
        lines += ["", "Prompt size (non-streaming, c=16): req/s / CPU ms per request",
                  "", "| prompt | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for size in sizes:
            cells = []
            for name in names:
                row = grown["prompt_bytes"][size][name]
                cpu = row.get("cpu_ms_per_request")
                cells.append(f"{row['rps']:.0f}" + (f" / {cpu:.2f}" if cpu is not None else "")
                             + (f" ({row['non_2xx']} refused)" if row.get("non_2xx") else ""))
            lines.append(f"| {int(size) // 1024} KB | " + " | ".join(cells) + " |")
    if grown.get("concurrent_streams"):
        counts = list(grown["concurrent_streams"])
        names = list(grown["concurrent_streams"][counts[0]])
        lines += ["", "Concurrent streams (TTFT 300 ms, 10 deltas 20 ms apart): TTFT p50 / p99 ms; "
                  "peak RSS MiB; errors", "",
                  "| streams | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for count in counts:
            cells = []
            for name in names:
                row = grown["concurrent_streams"][count][name]
                text = (f"{load.percentile(row['ttft_ms'], 50):.0f} / "
                        f"{load.percentile(row['ttft_ms'], 99):.0f}")
                if row.get("rss_peak_during_mib") is not None:
                    text += f"; {row['rss_peak_during_mib']:.0f} MiB"
                if row.get("errors"):
                    text += f"; {row['errors']} errors"
                cells.append(text)
            lines.append(f"| {count} | " + " | ".join(cells) + " |")
    decisions = doc.get("decision_growth") or {}
    if decisions:
        lines += ["", "Rules in the namespace's bundle: OPA decision latency at c=1 (1 KB prompt; the input "
                  "carries the pattern ids the sidecar matched, as the sidecar sends it)", "",
                  "| rules | p50 ms | p99 ms | decisions/s | sidecar pattern pass ms (patterns) "
                  "| bundle load s | OPA RSS MiB |",
                  "|---|---|---|---|---|---|---|"]
        for rules, row in decisions.items():
            match = (f"{row['sidecar_pattern_match_ms']:.3f} ({row['prompt_patterns']})"
                     if "sidecar_pattern_match_ms" in row else "–")
            lines.append(f"| {rules} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['rps_c1']:.0f} | "
                         f"{match} | {row['bundle_load_s']:.2f} | {row['opa_rss_mib']:.0f} |")
    return lines


def markdown(doc: dict[str, Any]) -> str:
    summary = doc["summary"]
    names = list(summary)

    def cell(arm: str, key: str, fmt: str = "{:.0f}") -> str:
        value = summary[arm].get(key)
        return fmt.format(value) if isinstance(value, (int, float)) else "–"

    rows = [
        ("non-stream req/s, c=1", "rps_c1", "{:.0f}"),
        ("non-stream req/s, c=16", "rps_c16", "{:.0f}"),
        ("non-stream req/s, c=64", "rps_c64", "{:.0f}"),
        ("added latency p50, c=1 (ms)", "added_p50_ms_c1", "{:.2f}"),
        ("added latency p99, c=1 (ms)", "added_p99_ms_c1", "{:.2f}"),
        ("added SSE TTFT p50, c=1 (ms)", "added_ttft_c1_p50_ms", "{:.2f}"),
        ("added SSE TTFT p99, c=1 (ms)", "added_ttft_c1_p99_ms", "{:.2f}"),
        ("added SSE TTFT p50, c=16 (ms)", "added_ttft_c16_p50_ms", "{:.2f}"),
        ("added SSE TTFT p99, c=16 (ms)", "added_ttft_c16_p99_ms", "{:.2f}"),
        ("SSE delta events/s (c=16)", "sse_events_per_s", "{:.0f}"),
        ("SSE CPU µs per delta event", "sse_cpu_us_per_event", "{:.1f}"),
        ("⇒ SSE events/s one dedicated core sustains", "sse_capacity_events_per_core", "{:.0f}"),
        ("CPU ms per request (c=16)", "cpu_ms_per_request_c16", "{:.3f}"),
        ("⇒ req/s one dedicated core sustains", "capacity_rps_per_core", "{:.0f}"),
        ("… of which sidecar process", "cpu_ms_per_request_c16_sidecar", "{:.3f}"),
        ("… of which its OPA", "cpu_ms_per_request_c16_opa", "{:.3f}"),
        ("RSS idle (MiB)", "rss_idle_mib", "{:.0f}"),
        ("RSS peak (MiB, VmHWM)", "rss_peak_mib", "{:.0f}"),
    ]
    lines = ["| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, key, fmt in rows:
        if any(key in summary[n] for n in names):
            lines.append(f"| {label} | " + " | ".join(cell(n, key, fmt) for n in names) + " |")
    lines += growth_markdown(doc)
    if doc.get("ratios"):
        lines += ["", "| ratio | value |", "|---|---|"]
        lines += [f"| {k} | {v:.3g} |" for k, v in doc["ratios"].items()]
    return "\n".join(lines) + "\n"


IDLE_SETTLE_S = 2.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI mode: one round, c=16, ~40 s")
    parser.add_argument("--arms", default="", help="comma list (default: all; quick: floor,skillwarden)")
    parser.add_argument("--rounds", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=0.0, help="duration of one measurement")
    parser.add_argument("--no-growth", action="store_true")
    parser.add_argument("--render", type=Path, default=None,
                        help="only print the tables of an earlier JSON result")
    parser.add_argument("--out", type=Path, default=None, help="JSON output (default bench/results/)")
    parser.add_argument("--spool", choices=("memory", "disk"), default="memory",
                        help="where the skillwarden arm's record spool lives: tmpfs (/dev/shm, the "
                             "chart's recording.spool.medium=Memory) or a directory on disk "
                             "(the chart's default emptyDir)")
    parser.add_argument("--nice", type=int, default=0,
                        help="scheduling niceness for the bench and everything it starts (root may "
                             "pass e.g. -10 on a box shared with other work; recorded in the JSON)")
    args = parser.parse_args(argv)

    if args.render:
        doc = json.loads(args.render.read_text())
        doc["ratios"] = ratios(doc["summary"])  # recomputes derived figures of older results
        print(markdown(doc))
        return 0
    quick = args.quick
    names = [n for n in (args.arms or ("floor,skillwarden" if quick else
                                       "direct,floor,skillwarden,litellm")).split(",") if n]
    rounds = args.rounds or (2 if quick else 3)
    seconds = args.seconds or 2.0
    out_path = args.out or RESULTS / ("quick.json" if quick else "full.json")
    if args.nice:
        os.nice(args.nice)  # inherited by the upstream, the arms and wrk
    pinned = pin_self()
    load_before = os.getloadavg()
    started = time.monotonic()
    factories = arm_factories(policy_rules=10, spool=args.spool)

    with tempfile.TemporaryDirectory(prefix="skw-bench-") as tmp:
        work = Path(tmp)
        with upstream_server(work) as upstream:
            running: list[arms_mod.Arm] = []
            try:
                for name in names:
                    print(f"starting {name}", flush=True)
                    running.append(factories[name](upstream, work))
                bench = Bench(running, seconds)
                idle: dict[str, float] = {}
                idle_processes: dict[str, dict[str, dict[str, float]]] = {}
                for arm in running:  # warm up caches, pools and JITs before anything counts
                    check_arm(arm)
                    bench.wrk(arm, request_body(), 16, 1.0)
                # Idle = warmed up and then left alone for IDLE_SETTLE_S, not the instant after a
                # burst (the sidecar returns a burst's freed heap on its next shipping pass, at
                # most a second later).
                time.sleep(IDLE_SETTLE_S)
                for arm in running:
                    if arm.pids():
                        idle[arm.name] = arms_mod.memory_kib(arm.pids(), "VmRSS") / 1024
                        idle_processes[arm.name] = arm.describe()
                results = [run_round(bench, i, quick) for i in range(rounds)]
                grown = growth(bench, seconds) if not (quick or args.no_growth) else None
                # Raw measurements first: a bug in the summary must not cost a 5-minute run.
                out_path.parent.mkdir(parents=True, exist_ok=True)
                out_path.write_text(json.dumps({"rounds": results, "growth": grown}, default=str))
                summary = summarise(results, names)
                for arm in running:
                    if arm.pids():
                        summary[arm.name]["rss_idle_mib"] = idle[arm.name]
                        summary[arm.name]["rss_peak_mib"] = arms_mod.memory_kib(arm.pids(), "VmHWM") / 1024
                        summary[arm.name]["processes"] = arm.describe()
                        summary[arm.name]["processes_idle"] = idle_processes[arm.name]
                    if arm.wiring:
                        summary[arm.name]["wiring"] = arm.wiring
                    if arm.metrics_url:
                        import sw_arm
                        summary[arm.name]["sidecar_counters"] = sw_arm.evidence(arm)
            finally:
                for arm in running:
                    arm.stop()
        decisions = (decision_growth(work, seconds) if "skillwarden" in names
                     and not (quick or args.no_growth) else None)

    doc: dict[str, Any] = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "mode": "quick" if quick else "full",
        # Load averages tell whether other work shared the cores: ratios survive it, absolutes don't.
        "machine": {"cpus": os.cpu_count(), "pinned": pinned, "python": platform.python_version(),
                    "kernel": platform.release(), "loadavg_before": load_before,
                    "loadavg_after": os.getloadavg()},
        "settings": {"rounds": rounds, "seconds": seconds, "arms": names, "nice": args.nice,
                     "prompt_bytes": 1024, "models": MODELS},
        "summary": summary, "ratios": ratios(summary), "rounds": results,
        "growth": grown, "decision_growth": decisions,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    table = markdown(doc)
    out_path.with_suffix(".md").write_text(table)
    print(table)
    print(f"wrote {out_path} in {doc['elapsed_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
