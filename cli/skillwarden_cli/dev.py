"""`skillwarden dev up | down | status [--format json]` and `skillwarden dev demo`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from skillwarden_devstack import stack
from skillwarden_devstack.processes import StackError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["up", "down", "status", "demo"])
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="where state, logs and data live (default $SKILLWARDEN_STATE_DIR or "
                             "~/.cache/skillwarden/state/default)")
    parser.add_argument("--format", choices=["text", "json"], default="text")


def run(args: argparse.Namespace) -> int:
    try:
        if args.action == "up":
            document = stack.up(args.state_dir)
        elif args.action == "demo":
            from skillwarden_devstack import demo

            outcome = demo.run(args.state_dir)
            return 0 if outcome.verify_exit_code == 0 else 1
        elif args.action == "down":
            stopped = stack.down(args.state_dir)
            print(json.dumps({"stopped": stopped}) if args.format == "json"
                  else f"stopped: {', '.join(stopped) or 'nothing was running'}")
            return 0
        else:
            document = stack.status(args.state_dir)
    except StackError as error:
        print(f"skillwarden dev {args.action}: {error}", flush=True)
        return 1
    if args.format == "json":
        print(json.dumps(document, indent=2))
    else:
        _print_text(document)
    return 0 if document.get("state") in {"up", "down"} or args.action == "status" else 1


def _print_text(document: dict[str, object]) -> None:
    print(f"state: {document.get('state')}  ({document.get('state_dir')})")
    for key in ("apiserver", "opa", "prometheus", "sidecar", "metrics"):
        if key in document:
            print(f"  {key:<12} {document[key]}")
    s3 = document.get("s3")
    if isinstance(s3, dict):
        print(f"  {'s3':<12} {s3['endpoint']}  bucket={s3['bucket']} (Object Lock, COMPLIANCE)")
    kubeconfigs = document.get("kubeconfigs")
    if isinstance(kubeconfigs, dict):
        for user, path in kubeconfigs.items():
            print(f"  kubeconfig   {user:<10} {path}")
