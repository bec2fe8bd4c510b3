"""Approval notifications: a Slack-compatible webhook POST when an approval is created or decided.

The body is Slack's incoming-webhook shape (`text` + `blocks`) plus a machine-readable
`skillwarden` object. No prompt text is sent, masked or not: the message names the approval, rule,
requester, skills and expiry, and how to review it. With a secret configured every POST is signed
the way Slack signs its callbacks, so a receiver (or an interactive relay) can verify it:

    X-Skillwarden-Request-Timestamp: <unix seconds>
    X-Skillwarden-Signature: v0=hex(HMAC-SHA256(secret, "v0:" + timestamp + ":" + body))

`verify_signature` is the matching check (5-minute window, constant-time compare). Delivery is
best effort and never delays or decides a request: failures are logged (without the secret).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import orjson

log = logging.getLogger("skillwarden.sidecar.approvals")

SIGNATURE_HEADER = "X-Skillwarden-Signature"
TIMESTAMP_HEADER = "X-Skillwarden-Request-Timestamp"
WINDOW_SECONDS = 300
EVENTS = ("created", "decided")


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret, base, hashlib.sha256).hexdigest()


def verify_signature(secret: bytes, timestamp: str, body: bytes, signature: str, now: float) -> bool:
    """True only for a well-formed timestamp within 5 minutes of `now` and a matching signature."""
    if not secret or not timestamp.isdigit():
        return False
    if abs(now - int(timestamp)) > WINDOW_SECONDS:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body).encode(), signature.encode())


def message(event: str, view: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
    name, namespace = view.get("name"), view.get("namespace")
    requester = ((spec.get("requester") or {}).get("identity") or {}).get("sub", "?")
    skills = (spec.get("request") or {}).get("skillSummary") or "-"
    if event == "created":
        headline = f"SkillApproval {namespace}/{name} needs {view.get('required')} approval(s)"
        hint = f'`skillwarden approvals approve {name} -n {namespace} --reason "..."` (or `deny`)'
    else:
        reviews = "; ".join(
            f"{r.get('reviewer')} {r.get('decision')}: {r.get('reason')}" for r in view.get("reviews") or []
        )
        headline = f"SkillApproval {namespace}/{name} is {view.get('state')}"
        hint = reviews or "no reviews"
    text = (
        f"{headline}\nrule {view.get('rule')} (policy {view.get('policy')}), requester {requester}, "
        f"skills {skills}, expires {view.get('expiresAt')}\n{hint}"
    )
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"digest {view.get('requestDigest')}"}],
            },
        ],
        "skillwarden": {"event": event, "approval": dict(view)},
    }


class Notifier:
    """Posts notifications in the background; `aclose()` waits (bounded) for those in flight."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        secret: bytes = b"",
        timeout: float = 3.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._session = session
        self._url = url
        self._secret = secret
        self._timeout = timeout
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, event: str, view: Mapping[str, Any], spec: Mapping[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self.send(event, view, spec))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def send(self, event: str, view: Mapping[str, Any], spec: Mapping[str, Any]) -> None:
        body = orjson.dumps(message(event, view, spec))
        headers = {"Content-Type": "application/json"}
        if self._secret:
            timestamp = str(int(self._clock()))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = sign(self._secret, timestamp, body)
        try:
            async with self._session.post(
                self._url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=self._timeout)
            ) as response:
                if response.status >= 300:
                    log.warning(
                        "approval notification %s for %s: HTTP %d", event, view.get("name"), response.status
                    )
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            log.warning(
                "approval notification %s for %s failed: %s", event, view.get("name"), type(error).__name__
            )

    async def aclose(self) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self._timeout)
