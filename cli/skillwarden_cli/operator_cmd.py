"""`skillwarden operator`: run the operator (kopf handlers + admission webhook + bundle service).

Settings are flags and `SKILLWARDEN_OPERATOR_*` variables (docs/operator.md). The Kubernetes
credentials are the in-cluster service account or $KUBECONFIG, as kubectl finds them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    from skillwarden_operator import config, main

    config.add_arguments(parser)
    for module in main.handler_modules():
        extra = getattr(module, "configure", None)
        if extra is not None:
            extra(parser)


def run(args: argparse.Namespace) -> int:
    from skillwarden_operator import config, main

    try:
        settings = config.from_args(args)
    except config.ConfigError as error:
        print(f"skillwarden operator: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(main.serve(settings, args))
    return 0
