"""The skillwarden arm: `skillwarden sidecar` with its own OPA, both pinned to the SUT core.

Everything is real: a caller JWT (ES256) verified against a JWKS file, an OPA decision from a
bundle built by `skillwarden_operator.bundle.build_bundle`, masking on request and response, and
recording to the spool (group commit) shipped to the local SeaweedFS S3 (Object Lock bucket)
when the sidecar has those hooks. What was wired is reported in the results (`skillwarden_wiring`),
so a run never silently measures less than the full pipeline.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import arms as arms_mod
import jwt
import load
import orjson
from cryptography.hazmat.primitives.asymmetric import ec

NAMESPACE = "bench"
GROUP = "bench-users"
ISSUER = "https://issuer.bench.invalid"
AUDIENCE = "skillwarden"


def policy(rules: int, name: str = "bench-policy") -> dict[str, Any]:
    """A policy shaped like the finance example, with `rules` rules that never match the bench
    prompt (so every rule is evaluated and the request is allowed)."""
    kinds = []
    for i in range(rules):
        if i % 3 == 0:
            when: dict[str, Any] = {"promptMatches": [f"(?i)forbidden topic {i} (list|dump|export)"]}
        elif i % 3 == 1:
            when = {"models": [f"claude-legacy-{i}-*"]}
        else:
            when = {"skills": [{"type": "custom", "id": f"skill_bench{i:06d}"}],
                    "maxTokensAbove": 100_000}
        kinds.append({"name": f"rule-{i}", "action": "deny" if i % 2 else "requireApproval",
                      "message": f"bench rule {i}", "when": when})
    return {
        "apiVersion": "skillwarden.io/v1alpha1", "kind": "SkillPolicy",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "defaultAction": "deny",
            "subjects": [{"name": "bench", "groups": [GROUP], "models": ["claude-*"],
                          "maxTokens": 20_000}],
            "rules": kinds,
            "masking": {"upstream": ["US_SSN", "CREDIT_CARD", "IBAN_CODE", "API_KEY", "PRIVATE_KEY",
                                     "EMAIL_ADDRESS"],
                        "client": ["US_SSN", "CREDIT_CARD", "EMAIL_ADDRESS"],
                        "operators": {"EMAIL_ADDRESS": "hmac", "CREDIT_CARD": "partial"},
                        "custom": [{"name": "EMPLOYEE_ID", "pattern": "EMP-[0-9]{6}"}]},
            "approval": {"approvers": {"groups": ["bench-leads"]}, "required": 1, "ttl": "30m",
                         "holdSeconds": 5},
            "recording": {"bucket": "skillwarden-audit", "prefix": "bench/", "retentionDays": 1,
                          "mode": "COMPLIANCE"},
        },
    }


def bundle_bytes(rules: int) -> tuple[bytes, str]:
    from skillwarden_operator.bundle import build_bundle
    # The CRD caps one policy at 1,000 rules; more rules means more policies in the namespace.
    # Only the first grants the caller: the series grows rules, not grants (every granting
    # subject is evaluated and named in the decision's reasons).
    policies = [policy(min(1000, rules - start), f"bench-policy-{start // 1000}")
                for start in range(0, rules, 1000)]
    for extra in policies[1:]:
        extra["spec"].pop("subjects")
    built = build_bundle(NAMESPACE, policies)
    if built.invalid:
        raise RuntimeError(f"bench policy rejected by the compiler: {built.invalid}")
    return built.data, built.revision


def opa_binary() -> Path:
    from skillwarden_devstack import tools
    return tools.build_go_tool("opa", tools.OPA_VERSION)


def start_opa(arm: arms_mod.Arm, work: Path, rules: int, label: str = "opa") -> str:
    data, _ = bundle_bytes(rules)
    path = work / f"bundle-{rules}.tar.gz"
    path.write_bytes(data)
    port = arms_mod.free_port()
    log = work / f"{label}.log"
    proc = arm.spawn([str(opa_binary()), "run", "--server", f"--addr=127.0.0.1:{port}",
                      "--diagnostic-addr=", "--log-level=error", "--bundle", str(path)], log)
    url = f"http://127.0.0.1:{port}"
    arms_mod.wait_http(url + "/health?bundles", 60, proc, log)
    return url


def caller_token(work: Path) -> tuple[str, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "bench-1", "use": "sig", "alg": "ES256"})
    jwks = work / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}))
    now = int(time.time())
    token = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "groups": [GROUP],
                        "email": "alice@bench.invalid", "iat": now, "nbf": now - 5, "exp": now + 3600},
                       key, algorithm="ES256", headers={"kid": "bench-1"})
    return token, jwks


def sidecar_flags() -> str:
    done = subprocess.run([sys.executable, "-m", "skillwarden_cli.main", "sidecar", "--help"],
                          capture_output=True, text=True, check=True)
    return done.stdout


def stack_s3(work: Path) -> dict[str, Any]:
    """Only SeaweedFS of the dev stack (on core 0 with the generator): the sidecar ships there."""
    from skillwarden_devstack import components, tools
    bins = tools.ensure_all()
    (work / "stack").mkdir(parents=True, exist_ok=True)
    running, s3 = components.start_s3(bins, work / "stack")
    s3["pid"] = running.pid
    return s3


def start(upstream: str, work: Path, rules: int = 10, spool: str = "memory") -> arms_mod.Arm:
    arm = arms_mod.Arm("skillwarden")
    try:
        return _start(arm, upstream, work, rules, spool)
    except BaseException:
        arm.stop()  # a half-started arm must not leave OPA, S3 or the sidecar behind
        raise


def _spool_dir(work: Path, spool: str) -> Path:
    """tmpfs (/dev/shm) stands for the chart's `recording.spool.medium: Memory`; a directory under
    the bench's work dir (on disk) for the default emptyDir."""
    if spool == "memory" and Path("/dev/shm").is_dir():
        return Path(tempfile.mkdtemp(prefix="skw-bench-spool-", dir="/dev/shm"))
    return work / "spool"


def _start(arm: arms_mod.Arm, upstream: str, work: Path, rules: int, spool_kind: str) -> arms_mod.Arm:
    opa_url = start_opa(arm, work, rules)
    token, jwks = caller_token(work)
    key_file = work / "provider-key"
    key_file.write_text("sk-ant-bench-" + secrets.token_hex(8))
    port, admin = arms_mod.free_port(), arms_mod.free_port()
    experiment = os.environ.get("SKILLWARDEN_BENCH_EXPERIMENT", "")
    launcher = ([str(Path(__file__).with_name("experiments.py")), experiment] if experiment
                else ["-m", "skillwarden_cli.main"])
    argv = [sys.executable, *launcher, "sidecar",
            f"--namespace={NAMESPACE}", "--pod-name=bench-0", "--service-account=bench",
            f"--port={port}", "--admin-host=127.0.0.1", f"--admin-port={admin}",
            f"--upstream-url={upstream}", f"--provider-key-file={key_file}", f"--opa-url={opa_url}",
            f"--oidc-issuer={ISSUER}", f"--oidc-audience={AUDIENCE}", f"--oidc-jwks-file={jwks}",
            "--jwt-algorithms=ES256", "--log-level=INFO"]
    flags = sidecar_flags()
    wiring = {"jwt": "ES256 caller token, JWKS file", "opa": f"real OPA, {rules} rules", "masking": "off",
              "recording": "off"}
    if experiment:
        wiring["experiment"] = experiment  # a patched sidecar: never the headline figures
    env: dict[str, str] = {}
    if "--approvals " in flags or "--approvals {" in flags:
        # No Kubernetes API in the bench; the allow path never reaches the approval gate anyway.
        argv.append("--approvals=off")
    if "--masking-" in flags:
        wiring["masking"] = "on (policy: upstream + client entities, hmac/partial operators)"
        env["SKILLWARDEN_MASKING_HMAC_KEY_FILE"] = str(_hmac_key(work))
    if "--records-bucket" in flags:
        s3 = stack_s3(work)
        arm.extra_pids.append(s3["pid"])  # stopped with the arm; on core 0, not counted as SUT
        arm.s3 = s3
        spool = _spool_dir(work, spool_kind)
        arm.cleanup_dirs.append(spool)
        argv += [f"--records-bucket={s3['bucket']}", "--records-prefix=bench/",
                 f"--records-endpoint={s3['endpoint']}", f"--records-spool-dir={spool}",
                 "--records-retention-days=1"]
        env.update({"AWS_ACCESS_KEY_ID": s3["access_key"], "AWS_SECRET_ACCESS_KEY": s3["secret_key"],
                    "AWS_REGION": s3.get("region", "us-east-1")})
        medium = "tmpfs" if str(spool).startswith("/dev/shm") else "disk"
        wiring["recording"] = (f"on: spool {spool} ({medium}; fdatasync, group commit) shipped to SeaweedFS "
                               f"{s3['endpoint']} bucket {s3['bucket']} (Object Lock)")
    arm.wiring = wiring
    proc = arm.spawn(argv, work / "sidecar.log", env=env)
    arm.url = f"http://127.0.0.1:{port}"
    arm.headers = {"authorization": f"Bearer {token}", "anthropic-version": "2023-06-01"}
    arms_mod.wait_http(f"http://127.0.0.1:{admin}/readyz", 60, proc, work / "sidecar.log")
    arm.metrics_url = f"http://127.0.0.1:{admin}/metrics"
    return arm


def evidence(arm: arms_mod.Arm) -> dict[str, float]:
    """The sidecar's own counters after the run: proof that masking (and recording) really ran."""
    import urllib.request
    with urllib.request.urlopen(arm.metrics_url, timeout=5) as response:  # loopback admin port
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("skillwarden_masked_entities_total", "skillwarden_record",
                            "skillwarden_requests_total")):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    if arm.s3:
        # What reached the Object Lock bucket (the shipper's work), straight from S3.
        from skillwarden_devstack import components
        client = components.s3_client(arm.s3["endpoint"], arm.s3["access_key"], arm.s3["secret_key"])
        objects = size = 0
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=arm.s3["bucket"],
                                                                    Prefix="bench/"):
            for item in page.get("Contents", []):
                objects += 1
                size += int(item["Size"])
        out["s3_objects_under_bench/"] = objects
        out["s3_bytes_under_bench/"] = size
    return out


def _hmac_key(work: Path) -> Path:
    path = work / "hmac-key"
    path.write_text(secrets.token_hex(32))
    return path


def decision_input(prompt: str, matches: dict[str, Any] | None = None) -> bytes:
    request: dict[str, Any] = {
        "method": "POST", "path": "/v1/messages", "operation": "messages.create",
        "model": "claude-bench-overhead", "stream": False, "max_tokens": 16, "skills": [],
        "tools": [], "prompt_text": prompt, "prompt_chars": len(prompt)}
    if matches is not None:
        request["prompt_matches"] = matches
    return orjson.dumps({"input": {
        "identity": {"kind": "oidc", "sub": "alice", "iss": ISSUER, "groups": [GROUP],
                     "email": "alice@bench.invalid"},
        "workload": {"namespace": NAMESPACE, "pod": "bench-0", "service_account": "bench"},
        "request": request, "approval": {"id": "", "state": ""}}})


def sidecar_matches(url: str, prompt: str) -> tuple[dict[str, Any], float, int]:
    """What the sidecar sends: the bundle's pattern table matched in one RE2 set pass (and the
    CPU time of that pass, which moved from OPA into the sidecar)."""
    import urllib.request

    from skillwarden_sidecar.prompt_patterns import compile_table
    table_url = url + "/v1/data/skillwarden/policies/prompt_patterns"
    with urllib.request.urlopen(table_url, timeout=30) as response:
        table = compile_table(orjson.loads(response.read())["result"])
    rounds = 200
    started = time.process_time()
    for _ in range(rounds):
        ids = table.match(prompt)
    match_ms = (time.process_time() - started) * 1000 / rounds
    return {"fingerprint": table.fingerprint, "ids": ids}, match_ms, table.count


def decision_growth(work: Path, seconds: float, sizes: tuple[int, ...] = (10, 100, 1000, 10_000),
                    prompt: str = "") -> dict[str, Any]:
    """Decision latency of the real OPA (alone on the SUT core) as the rule count grows."""
    from run import prompt as make_prompt
    text = prompt or make_prompt(1024)
    out: dict[str, Any] = {}
    for rules in sizes:
        print(f"decision growth: {rules} rules", flush=True)
        arm = arms_mod.Arm(f"opa-{rules}")
        try:
            built = time.perf_counter()
            url = start_opa(arm, work, rules, label=f"opa-{rules}")
            ready_s = time.perf_counter() - built
            import urllib.request
            matches, match_ms, patterns = sidecar_matches(url, text)
            body = decision_input(text, matches)
            for _ in range(3):  # the first queries compile and cache; they are not the steady state
                warm = urllib.request.Request(url + "/v1/data/skillwarden/decision", data=body, method="POST")
                with urllib.request.urlopen(warm, timeout=30) as response:  # loopback OPA
                    if b'"action":"allow"' not in response.read():
                        raise RuntimeError(f"OPA with {rules} rules does not allow the bench request")
            result = load.run_wrk(url + "/v1/data/skillwarden/decision", body,
                                  {"content-type": "application/json"}, 1, seconds)
            if result.non_2xx:
                raise RuntimeError(f"OPA answered {result.non_2xx} non-2xx for {rules} rules: "
                                   f"{result.first_error_body}")
            out[str(rules)] = {"p50_ms": result.p50_ms, "p99_ms": result.p99_ms, "rps_c1": result.rps,
                               "sidecar_pattern_match_ms": round(match_ms, 4),
                               "prompt_patterns": patterns,
                               "bundle_load_s": round(ready_s, 2),
                               "opa_rss_mib": arms_mod.memory_kib(arm.pids(), "VmRSS") / 1024}
        finally:
            arm.stop()
    return out
