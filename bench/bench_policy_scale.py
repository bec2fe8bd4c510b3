"""Policy scale: compile time, bundle size and real-OPA decision latency from 10 to 10,000 rules.

    python bench/bench_policy_scale.py            # writes bench/results/policy_scale.json
    python bench/bench_policy_scale.py --quick    # fewer requests (smoke run)

One namespace holds N policies with 10 rules each (1 policy = 10 rules ... 1,000 = 10,000). Each
policy is a team's: one subject (its OIDC group) granting its own custom skills, and rules keyed
by those skills, by a tool, or by a literal model name, each with a prompt pattern — the shape the
compiler indexes (see skillwarden_operator/compiler.py). The request is a granted call by one team
(in the middle of the list) whose prompt matches one of its rules.

A second series has only prompt-only rules. They used to be the shape nothing could index (every
request tested every pattern in OPA); now the sidecar matches the bundle's whole pattern table in
one RE2 set pass and OPA looks the rules up by the ids that matched. Every input here carries
those ids exactly as the sidecar sends them, and the sidecar's pass is timed too
(`sidecar_pattern_pass_ms`), since that work moved out of OPA rather than vanished.

Latency is measured end to end over HTTP keep-alive against a real `opa run --server` that loaded
the bundle (`POST /v1/data/skillwarden/decision`), and OPA's own evaluation time
(`?metrics=true` -> timer_rego_query_eval_ns).
"""

from __future__ import annotations

import argparse
import http.client
import json
import platform
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from skillwarden_devstack import processes, tools
from skillwarden_operator import compiler
from skillwarden_operator.bundle import build_bundle
from skillwarden_sidecar.prompt_patterns import compile_table

RESULTS = Path(__file__).resolve().parent / "results" / "policy_scale.json"
NAMESPACE = "scale"
RULES_PER_POLICY = 10


def team_policy(index: int, prompt_only: bool = False) -> dict[str, Any]:
    skills = [{"type": "custom", "id": f"skill_t{index:04d}_{k}"} for k in range(3)]
    rules: list[dict[str, Any]] = []
    for k in range(RULES_PER_POLICY):
        when: dict[str, Any] = {"promptMatches": [f"(?i)team{index:04d} (export|dump) kind{k}\\b"]}
        if not prompt_only:
            if k < 6:
                when["skills"] = [skills[k % 3]]
            elif k < 8:
                when["tools"] = [f"tool_t{index:04d}_{k}"]
            elif k == 8:
                when["models"] = [f"claude-team{index:04d}-model"]
            else:
                when["skills"] = [skills[0]]
                when["maxTokensAbove"] = 4096
        action = ("deny", "requireApproval", "allow")[k % 3]
        rules.append({"name": f"rule-{k}", "action": action, "message": f"team {index} rule {k}",
                      "when": when})
    return {
        "apiVersion": "skillwarden.io/v1alpha1", "kind": "SkillPolicy",
        "metadata": {"name": f"team-{index:04d}", "namespace": NAMESPACE, "generation": 1},
        "spec": {
            "defaultAction": "deny",
            "subjects": [{"name": "members", "groups": [f"team-{index:04d}"], "skills": skills,
                          "models": ["claude-sonnet-4-*"],
                          "tools": [f"tool_t{index:04d}_6", f"tool_t{index:04d}_7"],
                          "maxTokens": 8192}],
            "rules": rules,
            "masking": {"upstream": ["US_SSN", "CREDIT_CARD"]},
            "approval": {"approvers": {"groups": [f"team-{index:04d}-leads"]}, "required": 1, "ttl": "30m",
                         "holdSeconds": 60},
            "recording": {"retentionDays": 365 + index},
        },
    }


def decision_input(team: int) -> dict[str, Any]:
    prompt = f"Please run the TEAM{team:04d} export kind1 for the quarter " + "lorem ipsum " * 40
    return {
        "identity": {"kind": "oidc", "sub": "user-1", "groups": [f"team-{team:04d}", "everyone"]},
        "workload": {"namespace": NAMESPACE, "pod": "app-1", "service_account": "app"},
        "request": {"method": "POST", "path": "/v1/messages", "operation": "messages.create",
                    "model": "claude-sonnet-4-5", "stream": False, "max_tokens": 1024,
                    "skills": [{"type": "custom", "skill_id": f"skill_t{team:04d}_1", "version": "latest"}],
                    "tools": [], "prompt_text": prompt, "prompt_chars": len(prompt)},
        "approval": {"id": "", "state": ""},
    }


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def measure_opa(opa: Path, bundle_path: Path, workdir: Path, body: bytes, requests: int) -> dict[str, Any]:
    port = processes.free_port()
    running = processes.spawn("opa-bench", [str(opa), "run", "--server", f"--addr=127.0.0.1:{port}",
                                            "--log-level=error", "-b", str(bundle_path)], workdir / "opa.log")
    try:
        started = time.monotonic()
        health = f"http://127.0.0.1:{port}/health?bundles"
        processes.wait_until("opa", lambda: urllib.request.urlopen(health, timeout=2).status == 200, running,
                             120, "bundle loaded")
        load_seconds = time.monotonic() - started
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Content-Type": "application/json"}
        result: dict[str, Any] = {}
        for _ in range(max(20, requests // 10)):  # warm-up: regex cache, connection, JIT-free paths
            connection.request("POST", "/v1/data/skillwarden/decision", body, headers)
            result = json.loads(connection.getresponse().read())["result"]
        wall: list[float] = []
        evaluation: list[float] = []
        for _ in range(requests):
            begin = time.perf_counter()
            connection.request("POST", "/v1/data/skillwarden/decision?metrics=true", body, headers)
            reply = json.loads(connection.getresponse().read())
            wall.append((time.perf_counter() - begin) * 1000)
            evaluation.append(reply["metrics"]["timer_rego_query_eval_ns"] / 1e6)
        connection.close()
        return {
            "opa_load_seconds": round(load_seconds, 3),
            "decision": {"action": result["action"], "rule": result["rule"], "policy": result["policy"]},
            "latency_ms": {"p50": round(statistics.median(wall), 3), "p99": round(percentile(wall, 0.99), 3)},
            "eval_ms": {"p50": round(statistics.median(evaluation), 3),
                        "p99": round(percentile(evaluation, 0.99), 3)},
        }
    finally:
        processes.stop(running)


def run_series(opa: Path, policy_counts: list[int], requests: int, prompt_only: bool) -> list[dict[str, Any]]:
    rows = []
    for count in policy_counts:
        policies = [team_policy(i, prompt_only) for i in range(count)]
        compiler.clear_validation_cache()
        begin = time.perf_counter()
        bundle = build_bundle(NAMESPACE, policies)
        cold = time.perf_counter() - begin
        # Warm: what the operator pays when one policy of the namespace changed (the others'
        # validation is memoised by content).
        policies[0] = team_policy(0, prompt_only)
        policies[0]["spec"]["rules"][0]["message"] = "edited"
        compile_times = []
        for _ in range(3):
            begin = time.perf_counter()
            bundle = build_bundle(NAMESPACE, policies)
            compile_times.append(time.perf_counter() - begin)
            policies[0]["spec"]["rules"][0]["message"] += "!"
        assert not bundle.invalid, bundle.invalid
        team = count // 2
        with tempfile.TemporaryDirectory(prefix="skw-bench-") as scratch:
            path = Path(scratch) / "bundle.tar.gz"
            path.write_bytes(bundle.data)
            policy_input = decision_input(team)
            # As the sidecar sends it: the bundle's prompt pattern table matched in one RE2 set pass.
            table = compile_table(bundle.document["prompt_patterns"])
            prompt = policy_input["request"]["prompt_text"]
            begin = time.process_time()
            for _ in range(100):
                ids = table.match(prompt)
            match_ms = (time.process_time() - begin) * 1000 / 100
            policy_input["request"]["prompt_matches"] = {"fingerprint": table.fingerprint, "ids": ids}
            body = json.dumps({"input": policy_input}).encode()
            measured = measure_opa(opa, path, Path(scratch), body, requests)
            measured["sidecar_pattern_pass_ms"] = round(match_ms, 4)
            measured["prompt_patterns"] = table.count
        expected_rule = "rule-1"
        assert measured["decision"]["rule"] == expected_rule, measured["decision"]
        row = {"policies": count, "rules": count * RULES_PER_POLICY,
               "compile_seconds_cold": round(cold, 4),
               "compile_seconds_one_policy_changed": round(statistics.median(compile_times), 4),
               "bundle_bytes": len(bundle.data),
               "data_json_bytes": len(json.dumps(bundle.document, separators=(",", ":"))), **measured}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests per size")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--policies", type=int, nargs="+", default=[1, 10, 100, 1000],
                        help="policy counts to measure (10 rules each)")
    parser.add_argument("--skip-prompt-only", action="store_true", help="only the indexed series")
    args = parser.parse_args()
    opa = tools.ensure_all().opa
    requests = 200 if args.quick else 2000
    indexed = run_series(opa, args.policies, requests, prompt_only=False)
    unindexed = ([] if args.skip_prompt_only
                 else run_series(opa, args.policies, max(50, requests // 10), prompt_only=True))
    document = {
        "benchmark": "policy_scale",
        "method": __doc__,
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                    "opa": tools.OPA_VERSION},
        "requests_per_size": {"indexed": requests, "prompt_only": max(50, requests // 10)},
        "indexed_rules": indexed,
        "prompt_only_rules": unindexed,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
