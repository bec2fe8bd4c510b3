"""`skillwarden sidecar`: run the enforcement sidecar (app traffic + admin port).

Every setting is a flag and a `SKILLWARDEN_*` environment variable (see docs/sidecar.md). Hook
modules of other teams (`skillwarden_sidecar.<area>.sidecar_hook`, `skillwarden_sidecar.approval_hook`)
are discovered: each adds its own flags and installs its hook.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from types import ModuleType

HOOK_MODULES = (
    "skillwarden_sidecar.recording.sidecar_hook",
    "skillwarden_sidecar.masking.sidecar_hook",
    "skillwarden_sidecar.approval_hook",
)


def _hook_modules() -> list[ModuleType]:
    found = []
    for name in HOOK_MODULES:
        try:
            found.append(importlib.import_module(name))
        except ModuleNotFoundError as error:
            if error.name is None or not name.startswith(error.name):
                raise  # the hook exists but one of ITS imports is missing: say so
    return found


def configure(parser: argparse.ArgumentParser) -> None:
    from skillwarden_sidecar import config

    config.add_arguments(parser)
    for module in _hook_modules():
        if hasattr(module, "configure"):
            module.configure(parser)


def run(args: argparse.Namespace) -> int:
    from skillwarden_sidecar import app, config
    from skillwarden_sidecar.pipeline import Hooks

    try:
        settings = config.from_args(args)
    except config.ConfigError as error:
        print(f"skillwarden sidecar: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from skillwarden_sidecar.logbuffer import buffer_logger
    buffer_logger("skillwarden.sidecar.access")  # one write per second, not one per request
    hooks = Hooks()
    try:
        for module in _hook_modules():
            if hasattr(module, "install"):
                module.install(args, settings, hooks)
    except (ValueError, OSError) as error:
        print(f"skillwarden sidecar: {error}", file=sys.stderr)
        return 2
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(app.serve(settings, hooks))
    else:
        uvloop.run(app.serve(settings, hooks))
    return 0
