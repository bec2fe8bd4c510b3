"""atheris (libFuzzer) harness: `python fuzz/harness.py TARGET [libFuzzer args] [corpus dirs]`.

The bytes libFuzzer produces go to `fuzz_targets.from_bytes(TARGET, data)` (one documented format
per target, so seeds are plain files and a crash file replays without atheris:
`python -c "import fuzz_targets as f; f.from_bytes('sse', open(P, 'rb').read())"` from fuzz/).
A target may raise only its documented errors; anything else is a crash libFuzzer saves under
`-artifact_prefix`. `fuzz/run.py` runs every target for a time budget.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["skillwarden_sidecar", "skillwarden_operator", "fuzz_targets"]):
    import fuzz_targets as ft


def main() -> None:
    target = sys.argv[1]
    if target not in ft.TARGET_NAMES:
        raise SystemExit(f"unknown target {target}; choose from {', '.join(ft.TARGET_NAMES)}")
    atheris.Setup([sys.argv[0], *sys.argv[2:]], lambda data: ft.from_bytes(target, data))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
