"""Recording wired into the sidecar pipeline (discovered by `skillwarden sidecar`).

Builds the two record parts (docs/records.md) from the pipeline's `Exchange` and appends them:
the request part in `record_request` (durable before forwarding), the response part in
`record_response`. Prompts and responses come ONLY from the masking hook's record view (every
detector); when no masking hook provides one, the text is withheld, never stored in clear.

Recording is enabled when a bucket is configured (`--records-bucket` /
SKILLWARDEN_RECORDS_BUCKET; the chart always sets it). Flags mirror `RecorderConfig`.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skillwarden_sidecar.recording import retention
from skillwarden_sidecar.recording.config import RecorderConfig
from skillwarden_sidecar.recording.recorder import Recorder

if TYPE_CHECKING:
    from aiohttp import web

    from skillwarden_sidecar.pipeline import Exchange, Hooks

log = logging.getLogger("skillwarden.recording")
WITHHELD = "[withheld: no record masking available]"
MAX_TEXT = 64 * 1024  # per text field; longer text is cut (marked `truncated`) to bound records


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts: list[str] = []
    if isinstance(content, list):
        for block in content:
            if not isinstance(block, dict):
                continue
            if isinstance(block.get("text"), str):
                parts.append(block["text"])
            elif block.get("type") in ("tool_use", "server_tool_use") and "input" in block:
                parts.append(f"[{block.get('type')} {block.get('name')}] {block['input']}")
            elif block.get("type") == "tool_result":
                parts.append(_text_of(block.get("content")))
    return "\n".join(p for p in parts if p)


def _bounded(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {"text": text[:MAX_TEXT], "chars": len(text)}
    if len(text) > MAX_TEXT:
        out["truncated"] = True
    return out


def prompt_of(body: dict[str, Any]) -> str:
    pieces = [_text_of(body.get("system"))]
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            pieces.append(_text_of(message.get("content")))
    return "\n".join(p for p in pieces if p)


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


class RecordingHook:
    """Implements the pipeline's RecordingHook with a `Recorder`."""

    def __init__(self, config: RecorderConfig, hooks: Hooks) -> None:
        self.recorder = Recorder(config)
        self.hooks = hooks

    async def context(self, app: web.Application) -> AsyncIterator[None]:
        from skillwarden_sidecar.app import METRICS
        from skillwarden_sidecar.recording.metrics import register_into
        if METRICS in app:
            register_into(app[METRICS].registry)
        await self.recorder.start()  # RecorderConfigError: the sidecar does not start
        yield
        await self.recorder.close()

    def admit(self) -> None:
        self.recorder.admit()

    def _view(self, exchange: Exchange) -> dict[str, Any]:
        record_view = getattr(self.hooks.response_masking, "record_view", None)
        if record_view is None:
            return {}
        try:
            view: dict[str, Any] = record_view(exchange)
        except Exception as error:  # a masking failure must not put clear text in a record
            log.error("recording: record masking failed for %s: %s", exchange.request_id,
                      type(error).__name__)
            return {}
        return view

    def _masking(self, view: dict[str, Any]) -> dict[str, Any]:
        counts = view.get("counts") or {}
        return {"counts": {k: int(v) for k, v in (counts.get("record") or {}).items()},
                "by_direction": counts, "detector_version": str(view.get("detector_version", "none")),
                "hmac_key_id": view.get("hmac_key_id")}

    def request_record(self, exchange: Exchange) -> dict[str, Any]:
        from skillwarden_sidecar.approval import approval_record
        view = self._view(exchange)
        body = exchange.body or {}
        masked = view.get("request")
        if isinstance(masked, dict):
            prompt = _bounded(prompt_of(masked))
            params = {k: v for k, v in masked.items() if k not in ("messages", "system")}
        elif body:
            prompt = {"text": WITHHELD, "chars": len(prompt_of(body)), "withheld": True}
            params = {k: body[k] for k in ("max_tokens", "temperature", "top_p", "top_k", "stream")
                      if k in body}
        else:
            prompt, params = {"text": "", "chars": 0}, {}
        request_input = (exchange.policy_input or {}).get("request") or {}
        identity = exchange.identity.as_input() if exchange.identity else {
            "kind": "workload", "sub": "", "iss": None, "groups": [], "email": None, "unverified": True}
        decision = exchange.decision
        rejection = exchange.rejection
        return {
            "exchange_id": exchange.request_id,
            "identity": identity,
            "workload": exchange.workload.as_input(),
            "route": {"method": exchange.method, "path": view.get("path", exchange.path),
                      "operation": exchange.operation},
            "model": view.get("model") if "model" in view else (
                body.get("model") if isinstance(body.get("model"), str) else None),
            "stream": bool(body.get("stream")),
            "skills": list(view["skills"] if "skills" in view else request_input.get("skills") or []),
            "tools": list(request_input.get("tools") or []),
            "prompt": prompt,
            "params": params,
            "decision": {
                "action": decision.action if decision else "deny",
                "policy": decision.policy if decision else None,
                "rule": decision.rule if decision else None,
                "reasons": list(decision.reasons) if decision else (
                    [rejection.message] if rejection else []),
                "message": decision.message if decision else None,
                "bundle_revision": decision.bundle_revision if decision else None,
                # What the policy asked for this record's lock (the shipper honours it).
                "recording": retention.from_policy(decision.recording) if decision else None,
            },
            "approval": approval_record(exchange.approval),
            "masking": self._masking(view),
            "timings": {"received_at": _iso(exchange.received_at),
                        "decision_ms": _ms(exchange.timings.decision_s),
                        "approval_wait_ms": _ms(exchange.timings.approval_wait_s)},
        }

    def response_record(self, exchange: Exchange) -> dict[str, Any]:
        view = self._view(exchange)
        rejection = exchange.rejection
        masked = view.get("response")
        response: dict[str, Any] | None = None
        if isinstance(masked, dict):
            content = masked.get("content")
            response = {**_bounded(_text_of(content)), "stop_reason": masked.get("stop_reason"),
                        "content_types": sorted({str(b.get("type")) for b in content or []
                                                 if isinstance(b, dict)})}
        elif exchange.response_body is not None or exchange.response_message is not None:
            response = {"text": WITHHELD, "withheld": True, "stop_reason": exchange.stop_reason}
        timings = exchange.timings
        reached_upstream = timings.upstream_ttft_s is not None or timings.upstream_s is not None
        if rejection is not None and not reached_upstream:
            outcome = "rejected"
        elif rejection is not None or exchange.error:
            outcome = "failed"
        else:
            outcome = "forwarded"
        status = exchange.response_status or (rejection.status if rejection else 0)
        error = ({"type": rejection.error_type, "message": rejection.message, "cause": rejection.cause}
                 if rejection else
                 ({"type": "api_error", "message": exchange.error} if exchange.error else None))
        timings = exchange.timings
        return {
            "exchange_id": exchange.request_id, "outcome": outcome, "status": int(status), "error": error,
            "response": response, "usage": exchange.usage, "masking": self._masking(view),
            # Repeated here: the response may land in another segment than its request.
            "recording": retention.from_policy(exchange.decision.recording) if exchange.decision else None,
            "timings": {"upstream_ttft_ms": _ms(timings.upstream_ttft_s),
                        "upstream_ms": _ms(timings.upstream_s), "total_ms": _ms(timings.total_s)},
        }

    async def record_request(self, exchange: Exchange) -> None:
        seq = await self.recorder.append("request", self.request_record(exchange))
        exchange.annotations["recording.request_seq"] = seq

    async def record_response(self, exchange: Exchange) -> None:
        seq = await self.recorder.append("response", self.response_record(exchange))
        exchange.annotations["recording.response_seq"] = seq


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def configure(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("session records (docs/records.md)")
    group.add_argument("--records-bucket", default=_env("SKILLWARDEN_RECORDS_BUCKET"),
                       help="Object Lock bucket; recording is enabled when set "
                            "[env SKILLWARDEN_RECORDS_BUCKET]")
    group.add_argument("--records-prefix", default=_env("SKILLWARDEN_RECORDS_PREFIX", ""),
                       help="key prefix [env SKILLWARDEN_RECORDS_PREFIX]")
    group.add_argument("--records-endpoint", default=_env("AWS_ENDPOINT_URL_S3") or _env("AWS_ENDPOINT_URL"),
                       help="S3 endpoint [env AWS_ENDPOINT_URL]; credentials from AWS_ACCESS_KEY_ID etc.")
    group.add_argument("--records-spool-dir", type=Path,
                       default=Path(_env("SKILLWARDEN_SPOOL_DIR", "/var/lib/skillwarden/spool") or "."),
                       help="local spool [env SKILLWARDEN_SPOOL_DIR]")
    group.add_argument("--records-signing-key-file", type=Path,
                       default=Path(p) if (p := _env("SKILLWARDEN_RECORDS_SIGNING_KEY_FILE")) else None,
                       help="Ed25519 PEM key [env SKILLWARDEN_RECORDS_SIGNING_KEY_FILE; "
                            "default <spool>/keys/signing-key.pem]")
    group.add_argument("--records-retention-days", type=int,
                       default=int(_env("SKILLWARDEN_RECORDS_RETENTION_DAYS", "2555") or 2555))
    group.add_argument("--records-lock-mode", choices=("COMPLIANCE", "GOVERNANCE"),
                       default=_env("SKILLWARDEN_RECORDS_LOCK_MODE", "COMPLIANCE"))
    group.add_argument("--records-digest-interval", type=float,
                       default=float(_env("SKILLWARDEN_RECORDS_DIGEST_INTERVAL", "60") or 60))
    group.add_argument("--records-max-unshipped-age", type=float,
                       default=float(_env("SKILLWARDEN_RECORDS_MAX_UNSHIPPED_AGE", "120") or 120))
    group.add_argument("--records-spool-max-bytes", type=int,
                       default=int(_env("SKILLWARDEN_RECORDS_SPOOL_MAX_BYTES", str(512 << 20)) or 512 << 20))
    group.add_argument("--records-fail-open", action="store_true",
                       default=_env("SKILLWARDEN_RECORDS_FAIL_OPEN", "") == "true",
                       help="admit requests while recording is unavailable (counted, logged) "
                            "[env SKILLWARDEN_RECORDS_FAIL_OPEN=true]")


def install(args: argparse.Namespace, config: Any, hooks: Hooks) -> None:
    bucket = getattr(args, "records_bucket", None)
    if not bucket:
        log.warning("recording: no --records-bucket / SKILLWARDEN_RECORDS_BUCKET: session records are OFF")
        return
    recorder_config = RecorderConfig(
        spool_dir=args.records_spool_dir, bucket=bucket, prefix=args.records_prefix or "",
        endpoint_url=args.records_endpoint, retention_days=args.records_retention_days,
        lock_mode=args.records_lock_mode, signing_key_file=args.records_signing_key_file,
        namespace=getattr(config, "namespace", "") or "default",
        pod=getattr(config, "pod_name", "") or os.environ.get("POD_NAME", "") or "sidecar",
        digest_interval_s=args.records_digest_interval, max_unshipped_age_s=args.records_max_unshipped_age,
        spool_max_bytes=args.records_spool_max_bytes, fail_open=bool(args.records_fail_open))
    hook = RecordingHook(recorder_config, hooks)
    hooks.recording = hook
    hooks.contexts.append(hook.context)

