"""Wires the approval gate into `skillwarden sidecar` (discovered by cli/skillwarden_cli/sidecar.py).

Flags (each also an environment variable):
  --approvals auto|on|off            SKILLWARDEN_APPROVALS (auto: on when a Kubernetes API is
                                     reachable by configuration — in a pod, or a kubeconfig given)
  --approval-kubeconfig PATH         SKILLWARDEN_APPROVAL_KUBECONFIG (default: in-cluster account)
  --approval-username-prefixes P,..  SKILLWARDEN_APPROVAL_USERNAME_PREFIXES (the API server's
                                     --oidc-username-prefix, so requesters are recognised)
  --approval-max-hold-seconds N      SKILLWARDEN_APPROVAL_MAX_HOLD_SECONDS (cap on policy holds)
  --approval-notify-url URL          SKILLWARDEN_APPROVAL_NOTIFY_URL (Slack-compatible webhook)
  --approval-notify-secret-file F    SKILLWARDEN_APPROVAL_NOTIFY_SECRET_FILE (signs notifications)
With approvals off, the pipeline's default refuses every `require_approval` (fail closed).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from skillwarden_sidecar.approval import ApprovalGate, GateSettings, Summarize
from skillwarden_sidecar.approval_client import ApprovalClient, KubeAccess, KubeError
from skillwarden_sidecar.errors import Rejection
from skillwarden_sidecar.notify import Notifier
from skillwarden_sidecar.pipeline import Exchange, Hooks

SUMMARY_KEY_ID = "approval-summary"


def configure(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    group = parser.add_argument_group("approvals")
    group.add_argument(
        "--approvals",
        choices=("auto", "on", "off"),
        default=env("SKILLWARDEN_APPROVALS", "auto"),
        help="human approval workflow through SkillApproval objects (env SKILLWARDEN_APPROVALS)",
    )
    group.add_argument(
        "--approval-kubeconfig",
        default=env("SKILLWARDEN_APPROVAL_KUBECONFIG", ""),
        help="kubeconfig for the approval API calls; default: the pod's service account",
    )
    group.add_argument(
        "--approval-username-prefixes",
        default=env("SKILLWARDEN_APPROVAL_USERNAME_PREFIXES", ""),
        help="comma-separated OIDC username prefixes of the API server (self-approval check)",
    )
    group.add_argument(
        "--approval-max-hold-seconds",
        type=float,
        default=float(env("SKILLWARDEN_APPROVAL_MAX_HOLD_SECONDS", "600")),
        help="upper bound on how long a request is held for approval",
    )
    group.add_argument(
        "--approval-notify-url",
        default=env("SKILLWARDEN_APPROVAL_NOTIFY_URL", ""),
        help="Slack-compatible webhook URL told when an approval is created or decided (empty: none)",
    )
    group.add_argument(
        "--approval-notify-secret-file",
        default=env("SKILLWARDEN_APPROVAL_NOTIFY_SECRET_FILE", ""),
        help="file with the HMAC secret that signs notifications (X-Skillwarden-Signature)",
    )


def masked_summary(exchange: Exchange, text: str) -> str:
    """The prompt as approvers see it: every detector (like records), always the redact operator,
    so no keyed token can be correlated from an approval object. If masking fails (e.g. its
    budget on a huge prompt), no text is shown at all."""
    from skillwarden_sidecar.masking import Masker, MaskingSpec

    masking = dict((exchange.decision.masking if exchange.decision else None) or {})
    masking["operators"] = {}
    try:
        spec = MaskingSpec.from_decision(masking, "record", b"", SUMMARY_KEY_ID)
        return Masker(spec).mask_text(text).text  # whole text: a cut could split an entity
    except Exception:  # any masking failure must hide the prompt, never show it
        return f"[prompt not shown: {len(text)} characters; masking failed]"


class DeferredApprovals:
    """The hook object the pipeline holds; the gate arrives when the cleanup context has opened
    the HTTP session (before the sidecar serves traffic)."""

    def __init__(self) -> None:
        self._gate: ApprovalGate | None = None

    def attach(self, gate: ApprovalGate | None) -> None:
        self._gate = gate

    async def lookup(self, exchange: Exchange) -> None:
        return None

    async def gate(self, exchange: Exchange) -> None:
        if self._gate is None:
            raise Rejection(
                503, "approval workflow is not running; request refused", cause="approval_unavailable"
            )
        await self._gate.gate(exchange)


def access_from(args: argparse.Namespace) -> KubeAccess | None:
    if args.approvals == "off":
        return None
    if args.approval_kubeconfig:
        return KubeAccess.from_kubeconfig(args.approval_kubeconfig)
    try:
        return KubeAccess.in_cluster()
    except (KubeError, OSError) as error:
        if args.approvals == "on":
            raise ValueError(f"--approvals on: no Kubernetes API configured ({error})") from error
        return None


def install(args: argparse.Namespace, config: Any, hooks: Hooks) -> None:
    access = access_from(args)
    if access is None:
        return
    settings = GateSettings(
        max_hold_seconds=float(args.approval_max_hold_seconds),
        username_prefixes=tuple(p for p in str(args.approval_username_prefixes).split(",") if p),
    )
    secret = b""
    if args.approval_notify_secret_file:
        secret = Path(args.approval_notify_secret_file).read_bytes().strip()
        if not secret:
            raise ValueError(f"--approval-notify-secret-file {args.approval_notify_secret_file} is empty")
    install_gate(hooks, access, settings, notify_url=args.approval_notify_url, notify_secret=secret)


def install_gate(
    hooks: Hooks,
    access: KubeAccess,
    settings: GateSettings,
    summarize: Summarize = masked_summary,
    *,
    notify_url: str = "",
    notify_secret: bytes = b"",
) -> None:
    deferred = DeferredApprovals()
    hooks.approval = deferred

    async def context(app: Any) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as session:
            notifier = Notifier(session, notify_url, notify_secret) if notify_url else None
            client = ApprovalClient(access, session)
            deferred.attach(ApprovalGate(client, settings, summarize=summarize, notifier=notifier))
            try:
                yield
            finally:
                deferred.attach(None)
                if notifier is not None:
                    await notifier.aclose()

    hooks.contexts.append(context)
