"""`skillwarden` command line: one sub-command module per audience, imported only when used so
`skillwarden mask` never pays for the Kubernetes client."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> (module, help). Each module has `configure(parser)` and `run(args) -> int`.
COMMANDS: dict[str, tuple[str, str]] = {
    "dev": ("skillwarden_cli.dev", "the local stack: up | down | status"),
    "mask": ("skillwarden_cli.mask", "mask regulated data and secrets: stdin -> stdout"),
    "sidecar": ("skillwarden_cli.sidecar", "run the enforcement sidecar (app traffic + admin port)"),
    "approvals": ("skillwarden_cli.approvals", "human approvals: list | show | approve | deny"),
    "policy": ("skillwarden_cli.policy", "SkillPolicy YAML: compile | test (GitOps CI)"),
    "operator": ("skillwarden_cli.operator_cmd", "run the operator (admission, compilation, bundle service)"),
    "audit": ("skillwarden_cli.audit", "records evidence: verify | show | search (S3 Object Lock)"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skillwarden", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text)
        if only is None or only == name:
            importlib.import_module(module_name).configure(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in arguments if not a.startswith("-")), None)
    parser = build_parser(chosen if chosen in COMMANDS else None)
    args = parser.parse_args(arguments)
    module = importlib.import_module(COMMANDS[args.command][0])
    code: int = module.run(args)
    return code


def kubectl_plugin_main() -> int:
    """`kubectl skillwarden approvals ...` is `skillwarden approvals ...`."""
    return main()


if __name__ == "__main__":
    sys.exit(main())
