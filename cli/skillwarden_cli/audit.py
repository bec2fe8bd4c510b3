"""`skillwarden audit verify|show|search`: the auditor's tools. They need only S3 read access to
the records bucket and, for verify, the public keys the auditor pinned (`--trusted-key`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

EXIT_CONFIG = 3


def _s3_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", default=os.environ.get("AWS_ENDPOINT_URL_S3") or
                        os.environ.get("AWS_ENDPOINT_URL"), help="S3 endpoint URL (env AWS_ENDPOINT_URL)")
    parser.add_argument("--bucket", default=os.environ.get("SKILLWARDEN_RECORDS_BUCKET", "skillwarden-audit"))
    parser.add_argument("--prefix", default=os.environ.get("SKILLWARDEN_RECORDS_PREFIX", ""),
                        help="key prefix of the records (the policy's recording.prefix)")
    parser.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    parser.add_argument("--access-key", default=None, help="default: AWS_ACCESS_KEY_ID / boto3 chain")
    parser.add_argument("--secret-key", default=None, help="default: AWS_SECRET_ACCESS_KEY / boto3 chain")


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="audit_command", required=True, metavar="verify|show|search|keys")
    verify = sub.add_parser("verify", help="prove records are complete and untampered (JSON report)")
    _s3_arguments(verify)
    verify.add_argument("--trusted-key", action="append", type=Path, default=[], required=True,
                        help="pinned Ed25519 public key (PEM) or a directory of them; repeatable")
    verify.add_argument("--check-retention", action="store_true",
                        help="also check Object Lock mode and retain-until of every object version, "
                             "at least as long and strict as its records' policy decisions declared")
    verify.add_argument("--retention-days", type=int, default=None,
                        help="with --check-retention: minimum days every version must be locked for")
    verify.add_argument("--mode", default="COMPLIANCE", choices=["COMPLIANCE", "GOVERNANCE"],
                        help="with --check-retention: weakest lock mode accepted (COMPLIANCE > GOVERNANCE)")
    verify.add_argument("--output", type=Path, default=None, help="write the report here (default stdout)")
    show = sub.add_parser("show", help="one exchange, readable")
    _s3_arguments(show)
    show.add_argument("exchange_id")
    show.add_argument("--format", choices=["text", "json", "ocsf"], default="text")
    search = sub.add_parser("search", help="exchanges matching filters, one JSON line each")
    _s3_arguments(search)
    search.add_argument("--identity", help="caller sub or e-mail, or system:serviceaccount:<ns>:<sa>")
    search.add_argument("--skill", help="skill id")
    search.add_argument("--decision", choices=["allow", "deny", "require_approval"])
    search.add_argument("--since", help="RFC 3339 UTC time, inclusive (e.g. 2026-11-24T00:00:00Z)")
    search.add_argument("--until", help="RFC 3339 UTC time, exclusive")
    search.add_argument("--format", choices=["summary", "ocsf"], default="summary")
    keys = sub.add_parser("keys", help="public signing keys published under the prefix, with fingerprints "
                                       "to compare against the ones handed over out of band")
    _s3_arguments(keys)
    keys.add_argument("--save", type=Path, default=None,
                      help="write each key as <key_id>.pem into this directory (review before pinning)")


def _client(args: argparse.Namespace) -> Any:
    from skillwarden_sidecar.recording.s3store import make_client
    return make_client(args.endpoint, args.region, args.access_key, args.secret_key, max_attempts=3)


def _prefix(args: argparse.Namespace) -> str:
    prefix = str(args.prefix)
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def _time_bound(text: str | None) -> str | None:
    """Normalise to the records' timestamp form so text comparison is time comparison."""
    if not text:
        return None
    from datetime import UTC, datetime

    from skillwarden_sidecar.recording.entry import timestamp
    return timestamp(datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC))


def run(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError
    try:
        if args.audit_command == "verify":
            return _verify(args)
        if args.audit_command == "show":
            return _show(args)
        if args.audit_command == "keys":
            return _keys(args)
        return _search(args)
    except (ClientError, BotoCoreError, ValueError) as error:
        print(f"skillwarden audit: {error}", file=sys.stderr)
        return EXIT_CONFIG


def _verify(args: argparse.Namespace) -> int:
    from skillwarden_sidecar.recording.keys import SigningKeyError, load_trusted_keys
    from skillwarden_sidecar.recording.verify import VerifyConfigError, verify
    try:
        trusted = load_trusted_keys(list(args.trusted_key))
        report = verify(_client(args), args.bucket, _prefix(args), trusted,
                        check_retention=args.check_retention, retention_days=args.retention_days,
                        expected_mode=args.mode)
    except (SigningKeyError, VerifyConfigError) as error:
        report = {"ok": False, "exit_code": EXIT_CONFIG, "error": str(error)}
        print(f"skillwarden audit verify: {error}", file=sys.stderr)
    text = json.dumps(report, indent=2, default=str, sort_keys=True)
    if args.output:
        args.output.write_text(text + "\n")
    else:
        print(text)
    code: int = report["exit_code"]
    return code


def _show(args: argparse.Namespace) -> int:
    from skillwarden_sidecar.recording.ocsf import to_ocsf
    from skillwarden_sidecar.recording.reader import iter_entries
    parts: dict[str, dict[str, Any]] = {}
    for entry in iter_entries(_client(args), args.bucket, _prefix(args)):
        if entry.get("record", {}).get("exchange_id") == args.exchange_id and entry["kind"] in (
                "request", "response"):
            parts[entry["kind"]] = entry
    if not parts:
        print(f"no record of exchange {args.exchange_id!r} under s3://{args.bucket}/{_prefix(args)}",
              file=sys.stderr)
        return 1
    if args.format == "json":
        print(json.dumps(parts, indent=2, sort_keys=True))
    elif args.format == "ocsf":
        if "request" not in parts:
            print("the request part of this exchange is missing; no OCSF view", file=sys.stderr)
            return 1
        print(json.dumps(to_ocsf(parts["request"], parts.get("response")), indent=2, sort_keys=True))
    else:
        print(render(parts.get("request"), parts.get("response")))
    return 0


def render(request: dict[str, Any] | None, response: dict[str, Any] | None) -> str:
    lines: list[str] = []
    if request:
        r = request["record"]
        who, work, decision = r.get("identity") or {}, r.get("workload") or {}, r.get("decision") or {}
        lines += [
            f"exchange   {r.get('exchange_id')}",
            f"recorded   {request['time']}  (stream {request['stream']}, seq {request['seq']})",
            f"identity   {who.get('kind')} {who.get('sub')}  groups={','.join(who.get('groups') or [])}",
            f"workload   {work.get('namespace')}/{work.get('pod')} (sa {work.get('service_account')})",
            f"route      {(r.get('route') or {}).get('method')} {(r.get('route') or {}).get('path')} "
            f"[{(r.get('route') or {}).get('operation')}]",
            f"model      {r.get('model')}",
            "skills     " + (", ".join(f"{s.get('type')}:{s.get('skill_id')}@{s.get('version')}"
                                       for s in r.get("skills") or []) or "-"),
            f"tools      {', '.join(r.get('tools') or []) or '-'}",
            f"decision   {decision.get('action')}  policy={decision.get('policy')} "
            f"rule={decision.get('rule')} "
            f"bundle={decision.get('bundle_revision')}",
            f"reasons    {'; '.join(decision.get('reasons') or []) or '-'}",
        ]
        approval = r.get("approval")
        if approval:
            reviewers = ", ".join(f"{v.get('reviewer')}={v.get('decision')}"
                                  + (f" ({v.get('reason')!r} at {v.get('time')})" if v.get("reason") else "")
                                  for v in approval.get("reviewers", []))
            lines.append(f"approval   {approval.get('name')} {approval.get('state')} by {reviewers or '-'}")
        lines += [f"params     {json.dumps(r.get('params'), sort_keys=True)}",
                  f"masked     {json.dumps((r.get('masking') or {}).get('counts'), sort_keys=True)} "
                  f"(detector {(r.get('masking') or {}).get('detector_version')})",
                  "prompt (masked):",
                  "  " + str((r.get("prompt") or {}).get("text", "")).replace("\n", "\n  ")]
    else:
        lines.append("request part: MISSING")
    if response:
        p = response["record"]
        lines += [f"outcome    {p.get('outcome')}  HTTP {p.get('status')}  at {response['time']} "
                  f"(seq {response['seq']})",
                  f"usage      {json.dumps(p.get('usage'), sort_keys=True)}",
                  f"timings    {json.dumps(p.get('timings'), sort_keys=True)}"]
        if p.get("error"):
            lines.append(f"error      {p['error'].get('type')}: {p['error'].get('message')}")
        if p.get("response"):
            lines += ["response (masked):", "  " + str(p["response"].get("text", "")).replace("\n", "\n  ")]
    else:
        lines.append("response part: not recorded (in flight, or the sidecar stopped before the answer)")
    return "\n".join(lines)


def _search(args: argparse.Namespace) -> int:
    from skillwarden_sidecar.recording.ocsf import to_ocsf
    from skillwarden_sidecar.recording.reader import iter_entries, iter_exchanges, matches, summary
    since, until = _time_bound(args.since), _time_bound(args.until)
    for exchange in iter_exchanges(iter_entries(_client(args), args.bucket, _prefix(args))):
        if matches(exchange, identity=args.identity, skill=args.skill, decision=args.decision,
                   since=since, until=until):
            if args.format == "ocsf" and exchange.request:
                print(json.dumps(to_ocsf(exchange.request, exchange.response), sort_keys=True), flush=True)
            else:
                print(json.dumps(summary(exchange), sort_keys=True), flush=True)
    return 0


def _keys(args: argparse.Namespace) -> int:
    """Published keys are a convenience, not a trust anchor: the id is re-derived from the key
    bytes here, and the auditor compares the SHA-256 fingerprint with the one handed over."""
    import hashlib

    from cryptography.hazmat.primitives import serialization

    from skillwarden_sidecar.recording import layout
    from skillwarden_sidecar.recording.keys import SigningKeyError, key_id, load_public_key
    client = _client(args)
    prefix = _prefix(args)
    listing = client.list_objects_v2(Bucket=args.bucket, Prefix=prefix + "keys/").get("Contents", [])
    for item in listing:
        parsed = layout.parse_key(prefix, item["Key"])
        if parsed.kind != "key":
            continue
        data = client.get_object(Bucket=args.bucket, Key=item["Key"])["Body"].read()
        try:
            public = load_public_key(data, item["Key"])
        except SigningKeyError as error:
            print(json.dumps({"key": item["Key"], "error": str(error)}), flush=True)
            continue
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        derived = key_id(public)
        print(json.dumps({"key_id": derived, "name_matches": derived == parsed.name,
                          "sha256": hashlib.sha256(raw).hexdigest(), "published": str(item["LastModified"]),
                          "object": item["Key"]}, sort_keys=True), flush=True)
        if args.save and derived == parsed.name:
            args.save.mkdir(parents=True, exist_ok=True)
            (args.save / f"{derived}.pem").write_bytes(data)
    return 0
