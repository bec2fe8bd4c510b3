"""The operator process: kopf (watching, admission) plus the aiohttp bundle service, one loop.

Handler modules register kopf handlers when imported. Other areas add their module to
HANDLER_MODULES; a module may also define `configure(parser)` (extra flags) and
`install(args, settings, memo)` (called before kopf starts). Our own kopf storage uses the
`skillwarden.io` prefixes (finalizer `skillwarden.io/finalizer`, progress and diff-base
annotations `skillwarden.io/*`), never kopf's `kopf.zalando.org` defaults.

Replicas run standalone (no kopf peering): each compiles every namespace itself and, the
compilation being deterministic, serves the same bytes; none is a single point of failure.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib
import logging
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import kopf

from skillwarden_operator import bundle_service, webhook_tls
from skillwarden_operator.config import ANNOTATION_PREFIX, FINALIZER, OperatorConfig
from skillwarden_operator.kube import Kube
from skillwarden_operator.state import OperatorState

HANDLER_MODULES = [
    "skillwarden_operator.policy_handlers",
    "skillwarden_operator.approvals_admission",
    "skillwarden_operator.injection_handlers",
]


def handler_modules() -> list[ModuleType]:
    return [importlib.import_module(name) for name in HANDLER_MODULES]


def kopf_settings(config: OperatorConfig, tls_dir: Path, now: dt.datetime) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration")
    settings.posting.level = logging.WARNING  # Events: ours (kopf.event) + kopf's warnings, no chatter
    settings.watching.server_timeout = 60
    settings.networking.request_timeout = 30
    if config.admission:
        host = config.webhook_host or config.webhook_addr
        tls = (webhook_tls.from_directory(config.webhook_cert_dir) if config.webhook_cert_dir is not None
               else webhook_tls.self_signed(tls_dir, [host, config.webhook_addr], now))
        settings.admission.server = kopf.WebhookServer(
            addr=config.webhook_addr, port=config.webhook_port, host=host,
            certfile=str(tls.certfile), pkeyfile=str(tls.pkeyfile), cafile=str(tls.cafile))
        settings.admission.managed = config.webhook_managed or None
    return settings


async def serve(config: OperatorConfig, args: argparse.Namespace | None = None,
                stop_flag: asyncio.Event | None = None) -> None:
    modules = handler_modules()
    state = OperatorState(config=config, kube=Kube.from_environment())
    memo = kopf.Memo(state=state)
    with tempfile.TemporaryDirectory(prefix="skillwarden-webhook-") as tls_dir:
        settings = kopf_settings(config, Path(tls_dir), dt.datetime.now(dt.UTC))
        if not config.admission:
            _drop_admission_handlers()
        for module in modules:
            install = getattr(module, "install", None)
            if install is not None:
                install(args, settings, memo)
        app = bundle_service.build_app(state.store, state.metrics, config.max_long_poll_seconds)
        expected = asyncio.create_task(_list_expected(state))
        async with bundle_service.serving(app, config.bundle_host, config.bundle_port):
            logging.getLogger("skillwarden.operator").info(
                "bundle service on http://%s:%d/bundles/<namespace>.tar.gz", config.bundle_host,
                config.bundle_port)
            await kopf.operator(
                clusterwide=not config.namespaces, namespaces=list(config.namespaces), standalone=True,
                settings=settings, memo=memo, stop_flag=stop_flag,
            )
        expected.cancel()


async def _list_expected(state: OperatorState) -> None:
    """Which namespaces must be compiled before this replica is ready (retried until the API
    server answers)."""
    log = logging.getLogger("skillwarden.operator")
    while True:
        try:
            found = await asyncio.to_thread(state.kube.namespaces_with_policies)
        except Exception as error:  # API server not reachable yet: not ready, try again
            log.warning("cannot list SkillPolicies yet: %s", error)
            await asyncio.sleep(2)
            continue
        wanted = set(state.config.namespaces)
        state.store.expected = found & wanted if wanted else found
        return


def _drop_admission_handlers() -> None:
    # A replica without a webhook server must not refuse to start over registered admission
    # handlers: it serves bundles; another replica (or Helm's configuration) does admission.
    registry: Any = kopf.get_default_registry()
    registry._webhooks._handlers.clear()
