"""`skillwarden mask`: mask regulated data and secrets in stdin, write the result to stdout.

Exit codes: 0 masked (findings or not), 2 bad usage or input (invalid UTF-8, bad pattern,
unknown entity), 3 the input exceeds the masking budget (nothing is written).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import BinaryIO

from skillwarden_sidecar.masking import (
    BUILTIN_ENTITIES,
    CustomPattern,
    CustomPatternError,
    Masker,
    MaskingBudgetExceeded,
    MaskingSpec,
    MaskingSpecError,
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--entities", nargs="+", metavar="ENTITY",
                        help="entity types to mask (comma or space separated; default: all built-in: "
                             f"{', '.join(sorted(BUILTIN_ENTITIES))})")
    parser.add_argument("--operator", action="append", default=[], metavar="ENTITY=OP",
                        help="redact (default) | partial | hmac, per entity; repeatable")
    parser.add_argument("--custom", action="append", default=[], metavar="NAME=RE2",
                        help="an extra pattern (bounded RE2), masked as [NAME]; repeatable")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("--hmac-key-file",
                        help="key for the hmac operator (or env SKILLWARDEN_MASK_HMAC_KEY)")
    parser.add_argument("--hmac-key-id", default="cli", help="key id recorded with hmac tokens")
    parser.add_argument("--max-bytes", type=int, default=64 * 1024 * 1024, help="size budget of the input")


def _split_pairs(values: list[str], what: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise MaskingSpecError(f"--{what} {value!r}: expected NAME=VALUE")
        pairs[name.strip()] = rest.strip() if what == "operator" else rest
    return pairs


def _spec(args: argparse.Namespace) -> MaskingSpec:
    custom = [CustomPattern(n, p) for n, p in _split_pairs(args.custom, "custom").items()]
    if args.entities:
        entities = frozenset(e.strip() for item in args.entities for e in item.split(",") if e.strip())
    else:
        entities = BUILTIN_ENTITIES | {c.name for c in custom}
    key = b""
    if args.hmac_key_file:
        with open(args.hmac_key_file, "rb") as handle:
            key = handle.read().strip()
    elif os.environ.get("SKILLWARDEN_MASK_HMAC_KEY"):
        key = os.environ["SKILLWARDEN_MASK_HMAC_KEY"].encode()
    return MaskingSpec(entities, _split_pairs(args.operator, "operator"), custom, key, args.hmac_key_id,
                       max_text_bytes=args.max_bytes, on_budget="raise")


def _read(stream: BinaryIO, limit: int) -> bytes:
    return stream.read(limit + 1)  # one byte past the budget is enough to know it is exceeded


def run(args: argparse.Namespace) -> int:
    try:
        masker = Masker(_spec(args))
    except (MaskingSpecError, CustomPatternError, OSError) as error:
        print(f"skillwarden mask: {error}", file=sys.stderr)
        return 2
    raw = _read(sys.stdin.buffer, args.max_bytes)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        print(f"skillwarden mask: stdin is not valid UTF-8 (byte {error.start}: {error.reason})",
              file=sys.stderr)
        return 2
    try:
        result = masker.mask_text(text)
    except MaskingBudgetExceeded as error:
        print(f"skillwarden mask: {error} (--max-bytes {args.max_bytes}); nothing written", file=sys.stderr)
        return 3
    if args.format == "json":
        findings = [{"entity": f.entity, "start": f.start, "end": f.end} for f in result.findings]
        sys.stdout.write(json.dumps({"text": result.text, "findings": findings}, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(result.text)
    sys.stdout.flush()
    return 0
