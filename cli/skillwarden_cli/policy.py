"""`skillwarden policy compile | test`: the operator's compiler and the shipped Rego tests, for
GitOps CI before a SkillPolicy is merged.

    skillwarden policy compile -f policy.yaml [-f more.yaml] -o bundle.tar.gz [--namespace ns]
    skillwarden policy test [-f policy.yaml ...] [--tests DIR]

`compile` validates exactly as admission does (errors name the field; exit 1) and writes the
same bytes the operator serves. `test` runs the shipped Rego unit tests, then the author's own
`*_test.rego` files from --tests against the bundle compiled from -f (data.skillwarden.* as OPA
sees it in the pod), with the real `opa` binary.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

EXIT_INVALID = 1
EXIT_USAGE = 2


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="policy_command", required=True, metavar="{compile,test}")
    compile_cmd = sub.add_parser("compile", help="validate SkillPolicy YAML and write the OPA bundle")
    compile_cmd.add_argument("-f", "--filename", action="append", required=True, type=Path,
                             help="SkillPolicy YAML (several documents per file; repeatable; - = stdin)")
    compile_cmd.add_argument("-o", "--output", type=Path, required=True, help="bundle .tar.gz to write")
    compile_cmd.add_argument("--namespace", help="namespace (default: the policies' metadata.namespace)")
    compile_cmd.add_argument("--min-retention-days", type=int, default=None,
                             help="retention floor, as the operator's --min-retention-days")
    test_cmd = sub.add_parser("test", help="run the shipped Rego tests plus policy-author tests with opa")
    test_cmd.add_argument("-f", "--filename", action="append", default=[], type=Path,
                          help="SkillPolicy YAML to compile for the author tests (repeatable)")
    test_cmd.add_argument("--tests", type=Path, help="directory of the author's *_test.rego files")
    test_cmd.add_argument("--namespace", help="namespace (default: the policies' metadata.namespace)")
    test_cmd.add_argument("-v", "--verbose", action="store_true", help="list every test")


def load_policies(paths: list[Path]) -> list[dict[str, Any]]:
    policies: list[dict[str, Any]] = []
    for path in paths:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
        for document in yaml.safe_load_all(text):
            if document is None:
                continue
            if isinstance(document, dict) and document.get("kind") == "List":
                policies.extend(document.get("items", []))
            else:
                policies.append(document)
    return policies


def _namespace(policies: list[dict[str, Any]], given: str | None) -> str:
    if given:
        return given
    found = {str((p.get("metadata") or {}).get("namespace") or "") for p in policies if isinstance(p, dict)}
    found.discard("")
    if len(found) != 1:
        raise ValueError("the policies name " + (f"several namespaces ({', '.join(sorted(found))})" if found
                                                  else "no namespace") + "; pass --namespace")
    return found.pop()


def _compile(args: argparse.Namespace) -> tuple[int, Any]:
    from skillwarden_operator import policy_model
    from skillwarden_operator.bundle import build_bundle

    try:
        policies = load_policies(args.filename)
        namespace = _namespace(policies, args.namespace)
    except (OSError, yaml.YAMLError, ValueError) as error:
        print(f"skillwarden policy: {error}", file=sys.stderr)
        return EXIT_USAGE, None
    for policy in policies:
        if not isinstance(policy, dict):
            print("skillwarden policy: every YAML document must be a SkillPolicy object", file=sys.stderr)
            return EXIT_INVALID, None
        policy.setdefault("metadata", {}).setdefault("namespace", namespace)
    floor = getattr(args, "min_retention_days", None) or policy_model.DEFAULT_MIN_RETENTION_DAYS
    bundle = build_bundle(namespace, policies, floor)
    if bundle.invalid:
        for key, problems in bundle.invalid.items():
            for problem in problems:
                print(f"{key}: {problem}", file=sys.stderr)
        return EXIT_INVALID, bundle
    return 0, bundle


def opa_binary() -> str:
    configured = os.environ.get("SKILLWARDEN_OPA")
    if configured:
        return configured
    try:
        from skillwarden_devstack.tools import OPA_VERSION, cache_dir

        cached = cache_dir() / "bin" / f"opa-{OPA_VERSION}"
        if cached.is_file():
            return str(cached)
    except ImportError:
        pass
    found = shutil.which("opa")
    if found is None:
        raise FileNotFoundError("opa not found: set SKILLWARDEN_OPA or put opa on PATH")
    return found


def run(args: argparse.Namespace) -> int:
    if args.policy_command == "compile":
        code, bundle = _compile(args)
        if code != 0:
            return code
        args.output.write_bytes(bundle.data)
        print(f"{args.output}: namespace {bundle.namespace}, {len(bundle.included)} policies, "
              f"revision {bundle.revision}, {len(bundle.data)} bytes")
        return 0
    return _test(args)


def _test(args: argparse.Namespace) -> int:
    from skillwarden_operator.bundle import REGO_DIR, read_bundle

    try:
        opa = opa_binary()
    except FileNotFoundError as error:
        print(f"skillwarden policy test: {error}", file=sys.stderr)
        return EXIT_USAGE
    verbose = ["-v"] if args.verbose else []
    print("== shipped Rego tests", flush=True)
    shipped = subprocess.run([opa, "test", *verbose, str(REGO_DIR)], check=False)
    if shipped.returncode != 0:
        return shipped.returncode
    if args.tests is not None and not args.filename:
        print("skillwarden policy test: --tests needs the policies under test (-f)", file=sys.stderr)
        return EXIT_USAGE
    if not args.filename:
        return 0
    args.min_retention_days = None
    code, bundle = _compile(args)
    if code != 0 or args.tests is None:
        return code
    with tempfile.TemporaryDirectory(prefix="skillwarden-policy-test-") as scratch:
        root = Path(scratch)
        for name, content in read_bundle(bundle.data).items():
            if name == ".manifest":
                continue
            target = root / "bundle" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        print(f"== author tests in {args.tests} against namespace {bundle.namespace} ({bundle.revision})",
              flush=True)
        author = subprocess.run([opa, "test", *verbose, str(root / "bundle"), str(args.tests)], check=False)
    return author.returncode
