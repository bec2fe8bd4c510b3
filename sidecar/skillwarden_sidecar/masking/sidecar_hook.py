"""Masking wired into the sidecar pipeline (discovered by `skillwarden sidecar`).

Directions, from the policy decision's `masking` object:
- upstream: `mask_request` rewrites the request body the provider sees;
- client: `mask_response_body` / `stream_masker` rewrite what the app gets back;
- record: every detector, always. `mask_request` / `mask_response_body` keep record-masked copies
  in `exchange.annotations` and `record_view(exchange)` returns what a session record may hold.
Counts (never values) land in `exchange.masking_counts[direction]`; the pipeline turns them into
the `skillwarden_masked_entities_total{entity, direction}` metric.

Flags / environment: `--masking-hmac-key-file` (SKILLWARDEN_MASKING_HMAC_KEY_FILE) holds the key
for `hmac` tokens; its id (`--masking-hmac-key-id`, default `sha256:<first 12 hex of the key's
SHA-256>`) is recorded so auditors know which key made a token. Without a key file a random
per-process key is used (id `ephemeral-...`): tokens then join only within one sidecar's lifetime.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import secrets
from collections import Counter, OrderedDict
from typing import Any, Literal

import orjson

from skillwarden_sidecar.errors import Rejection
from skillwarden_sidecar.masking.engine import Masker, MaskingBudgetExceeded, SharedScan, TextMasker
from skillwarden_sidecar.masking.entities import DETECTOR_VERSION
from skillwarden_sidecar.masking.spec import Direction, MaskingSpec, MaskingSpecError
from skillwarden_sidecar.masking.stream import StreamMasker
from skillwarden_sidecar.masking.structured import MaskingDepthError, mask_request_body, mask_response_body
from skillwarden_sidecar.pipeline import Exchange, Hooks, PassthroughStreamMasker
from skillwarden_sidecar.pipeline import StreamMasker as StreamMaskerProtocol

RECORD_REQUEST = "masking.record_request"
RECORD_RESPONSE = "masking.record_response"
_CACHE_SIZE = 64
_IDENTIFIER_MAX = 256  # paths, model names, skill ids
_IDENTIFIERS_KEPT = 1024


def key_id_for(key: bytes) -> str:
    return "sha256:" + hashlib.sha256(key).hexdigest()[:12]


class MaskingHook:
    """Implements the pipeline's RequestMaskingHook and ResponseMaskingHook."""

    def __init__(self, key: bytes, key_id: str, *, max_text_bytes: int = 8 << 20,
                 max_scan_seconds: float = 2.0, on_budget: Literal["mask", "raise"] = "mask") -> None:
        self.key = key
        self.key_id = key_id
        self._budgets = {"max_text_bytes": max_text_bytes, "max_scan_seconds": max_scan_seconds,
                         "on_budget": on_budget}
        self._maskers: OrderedDict[tuple[Any, ...], Masker] = OrderedDict()
        self._by_settings: dict[tuple[bytes, str], Masker | None] = {}
        self._identifiers: dict[tuple[Masker, str], str] = {}

    # -- maskers per decision and direction (compiled once, kept in a small LRU) ----------------

    def masker(self, exchange: Exchange, direction: Direction) -> Masker | None:
        """The masker for this decision's masking settings and direction. Asked up to five times
        per request with settings that change only with the bundle: the answer is memoised by the
        settings' exact bytes, so building and validating a spec is paid once per bundle."""
        masking = exchange.decision.masking if exchange.decision is not None else {}
        try:
            memo_key = (orjson.dumps(masking), direction)
        except TypeError:  # not JSON: let the spec builder name the problem
            return self._build_masker(masking, direction)
        if memo_key in self._by_settings:
            return self._by_settings[memo_key]
        built = self._build_masker(masking, direction)
        self._by_settings[memo_key] = built
        while len(self._by_settings) > _CACHE_SIZE:
            self._by_settings.pop(next(iter(self._by_settings)))
        return built

    def _build_masker(self, masking: Any, direction: Direction) -> Masker | None:
        try:
            spec = MaskingSpec.from_decision(masking, direction, self.key, self.key_id)
            spec = dataclasses.replace(spec, **self._budgets)  # type: ignore[arg-type]
        except (MaskingSpecError, KeyError, TypeError) as error:
            raise Rejection(500, f"the policy's masking settings are unusable ({error}); request refused",
                            cause="masking_config", error_type="api_error") from None
        if not spec.entities:
            return None
        cache_key = (spec.entities, tuple(sorted(spec.operators.items())), tuple(spec.custom))
        found = self._maskers.get(cache_key)
        if found is None:
            try:
                found = Masker(spec)
            except ValueError as error:
                raise Rejection(500, f"a custom masking pattern is unusable ({error}); request refused",
                                cause="masking_config", error_type="api_error") from None
            self._maskers[cache_key] = found
            if len(self._maskers) > _CACHE_SIZE:
                self._maskers.popitem(last=False)
        else:
            self._maskers.move_to_end(cache_key)
        return found

    @staticmethod
    def _count(exchange: Exchange, direction: str, counts: Counter[str]) -> None:
        exchange.masking_counts.setdefault(direction, Counter()).update(counts)

    # -- request -----------------------------------------------------------------------------

    def mask_request(self, exchange: Exchange) -> None:
        body = exchange.body
        if body is None:
            return
        try:
            record, upstream = _paired(self.masker(exchange, "record"), self.masker(exchange, "upstream"))
            if record is not None:
                masked, counts = mask_request_body(record, body)
                exchange.annotations[RECORD_REQUEST] = masked
                self._count(exchange, "record", counts)
            if upstream is not None:
                masked, counts = mask_request_body(upstream, body)
                self._count(exchange, "upstream", counts)
                if masked != body:
                    exchange.body = masked
                    exchange.body_modified = True
        except MaskingDepthError as error:
            raise Rejection(400, f"request cannot be masked: {error}", cause="masking_refused",
                            error_type="invalid_request_error") from None
        except MaskingBudgetExceeded as error:
            raise Rejection(413, f"request cannot be masked within budget: {error}", cause="masking_refused",
                            error_type="request_too_large") from None

    # -- response ----------------------------------------------------------------------------

    def mask_response_body(self, exchange: Exchange, body: dict[str, Any]) -> dict[str, Any]:
        try:
            record, client = _paired(self.masker(exchange, "record"), self.masker(exchange, "client"))
            if record is not None:
                masked_record, counts = mask_response_body(record, body)
                exchange.annotations[RECORD_RESPONSE] = masked_record
                self._count(exchange, "record", counts)
            if client is None:
                return body
            masked, counts = mask_response_body(client, body)
        except (MaskingDepthError, MaskingBudgetExceeded) as error:
            # The answer cannot be shown safely: the client gets an error instead of clear text.
            raise Rejection(502, f"upstream answer cannot be masked: {error}", cause="masking_refused",
                            error_type="api_error") from None
        self._count(exchange, "client", counts)
        return masked if counts else body

    def stream_masker(self, exchange: Exchange) -> StreamMaskerProtocol:
        client = self.masker(exchange, "client")
        if client is None:
            return PassthroughStreamMasker()
        return StreamMasker(client, exchange.masking_counts.setdefault("client", Counter()))

    # -- records -----------------------------------------------------------------------------

    def record_view(self, exchange: Exchange) -> dict[str, Any]:
        """What a session record may contain: request and response masked with every detector,
        counts per direction, the detector version and the hmac key id."""
        response = exchange.annotations.get(RECORD_RESPONSE)
        if response is None and exchange.response_message is not None:
            record = self.masker(exchange, "record")
            if record is not None:
                response, counts = mask_response_body(record, exchange.response_message)
                exchange.annotations[RECORD_RESPONSE] = response
                self._count(exchange, "record", counts)
        record_masker = self.masker(exchange, "record")

        def masked(value: Any) -> Any:
            # Free-form strings outside the body (a path segment, a model name, a skill id) can
            # carry PII too; the record gets them through the same record detectors. They repeat
            # on almost every request (twice per exchange): short ones are remembered.
            if record_masker is None or not isinstance(value, str):
                return value
            if len(value) > _IDENTIFIER_MAX:
                return record_masker.mask_text(value).text
            key = (record_masker, value)
            found = self._identifiers.get(key)
            if found is None:
                found = self._identifiers[key] = record_masker.mask_text(value).text
                while len(self._identifiers) > _IDENTIFIERS_KEPT:
                    self._identifiers.pop(next(iter(self._identifiers)))
            return found

        body = exchange.body or {}
        return {
            "path": masked(exchange.path),
            "model": masked(body.get("model")) if isinstance(body.get("model"), str) else None,
            "skills": [{k: masked(v) if k == "skill_id" else v for k, v in skill.items()}
                       for skill in ((exchange.policy_input or {}).get("request") or {}).get("skills") or []
                       if isinstance(skill, dict)],
            "request": exchange.annotations.get(RECORD_REQUEST),
            "response": response,
            "counts": {d: dict(c) for d, c in exchange.masking_counts.items() if c},
            "detector_version": DETECTOR_VERSION,
            "hmac_key_id": self.key_id,
        }


def _paired(record: Masker | None, other: Masker | None) -> tuple[TextMasker | None, TextMasker | None]:
    """The record's masker has every detector, so the upstream/client one is a subset: one scan
    of each string serves both walks (the record walk must run first)."""
    if record is None or other is None:
        return record, other
    shared = SharedScan(record, other)
    return shared.wide_view, shared.narrow_view


def configure(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("masking")
    group.add_argument("--masking-hmac-key-file", default=os.environ.get("SKILLWARDEN_MASKING_HMAC_KEY_FILE"),
                       help="key for hmac masking tokens [env SKILLWARDEN_MASKING_HMAC_KEY_FILE; "
                            "default: a random per-process key]")
    group.add_argument("--masking-hmac-key-id", default=os.environ.get("SKILLWARDEN_MASKING_HMAC_KEY_ID"),
                       help="id recorded with hmac tokens [env SKILLWARDEN_MASKING_HMAC_KEY_ID; "
                            "default sha256:<12 hex of the key's digest>]")
    group.add_argument("--masking-max-text-bytes", type=int,
                       default=int(os.environ.get("SKILLWARDEN_MASKING_MAX_TEXT_BYTES", 8 << 20)),
                       help="size budget per text [env SKILLWARDEN_MASKING_MAX_TEXT_BYTES; default 8 MiB]")
    group.add_argument("--masking-max-scan-seconds", type=float,
                       default=float(os.environ.get("SKILLWARDEN_MASKING_MAX_SCAN_SECONDS", 2.0)),
                       help="CPU budget per text [env SKILLWARDEN_MASKING_MAX_SCAN_SECONDS; default 2]")
    group.add_argument("--masking-on-budget", choices=("mask", "refuse"),
                       default=os.environ.get("SKILLWARDEN_MASKING_ON_BUDGET", "mask"),
                       help="over budget: replace the whole text by a marker, or refuse the request "
                            "[env SKILLWARDEN_MASKING_ON_BUDGET; default mask]")


def install(args: argparse.Namespace, config: object, hooks: Hooks) -> None:
    key_file = getattr(args, "masking_hmac_key_file", None)
    if key_file:
        with open(key_file, "rb") as handle:
            key = handle.read().strip()
        if len(key) < 16:
            raise ValueError(f"--masking-hmac-key-file {key_file}: key shorter than 16 bytes")
        key_id = getattr(args, "masking_hmac_key_id", None) or key_id_for(key)
    else:
        key = secrets.token_bytes(32)
        key_id = "ephemeral-" + secrets.token_hex(4)
    on_budget: Literal["mask", "raise"] = "raise" if getattr(args, "masking_on_budget", "mask") == "refuse" \
        else "mask"
    hook = MaskingHook(key, key_id, max_text_bytes=getattr(args, "masking_max_text_bytes", 8 << 20),
                       max_scan_seconds=getattr(args, "masking_max_scan_seconds", 2.0), on_budget=on_budget)
    hooks.request_masking = hook
    hooks.response_masking = hook
