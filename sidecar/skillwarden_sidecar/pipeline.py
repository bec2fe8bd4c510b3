"""The request pipeline's data (`Exchange`) and its plug-in points (`Hooks`).

Stages, in order (see `skillwarden_sidecar.stages`):

    admit → identity → policy → approval → mask(request) → record(request) → forward
          → mask(response) → record(response)

Every stage enriches the `Exchange` or raises a `Rejection`. Whatever happens — including a
rejection at the first stage — `record_request` (if not yet done) and `record_response` are called
with the exchange as it stands (`exchange.rejection` set), so every path leaves evidence.

Other teams replace the hooks. The defaults below are *explicit* no-ops: each is named for what
it does (nothing, or refusing), and none pretends to mask, record or approve:

- `NoApprovals`: there is no approval workflow, so a `require_approval` decision is refused
  with 403 (fail closed). The approvals hook instead holds the request, and on approval sets
  `exchange.approval` (state "Approved"); the pipeline then asks OPA again with that approval in
  the input, and forwards only if OPA now answers `allow`.
- `NoMasking`: forwards and returns text unchanged.
- `NoRecording`: writes nothing; `admit()` always admits.

Wiring a hook from the command line: a module `skillwarden_sidecar.<area>.sidecar_hook`
(area = masking | recording) or `skillwarden_sidecar.approval_hook` may define
`configure(parser: argparse.ArgumentParser) -> None` (its own flags, each with an env default
`SKILLWARDEN_<AREA>_*`) and `install(args: argparse.Namespace, config: SidecarConfig,
hooks: Hooks) -> None` (replace its hook on `hooks`; append long-lived resources to
`hooks.contexts`, which run as aiohttp cleanup contexts before the sidecar accepts traffic).
`skillwarden sidecar` discovers these modules; tests call `build_app(config, hooks)` directly.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from skillwarden_sidecar.errors import Rejection, forbidden
from skillwarden_sidecar.sse import SseEvent

if TYPE_CHECKING:
    from aiohttp import web


@dataclass(frozen=True)
class Identity:
    """Who is calling. `kind` is "workload" when no token was presented (the pod itself)."""

    kind: str  # workload | oidc | serviceaccount
    sub: str = ""
    iss: str = ""
    groups: tuple[str, ...] = ()
    email: str = ""

    def as_input(self) -> dict[str, Any]:
        return {"kind": self.kind, "sub": self.sub, "iss": self.iss, "groups": list(self.groups),
                "email": self.email}


@dataclass(frozen=True)
class Workload:
    """The pod this sidecar serves (from the downward API): always known."""

    namespace: str
    pod: str
    service_account: str

    def as_input(self) -> dict[str, str]:
        return {"namespace": self.namespace, "pod": self.pod, "service_account": self.service_account}


@dataclass(frozen=True)
class Decision:
    """OPA's answer (CONTRACTS.md "OUTPUT"), kept whole in `raw` for records."""

    action: str  # allow | deny | require_approval
    reasons: tuple[str, ...]
    policy: str | None
    rule: str | None
    message: str
    masking: dict[str, Any]
    recording: dict[str, Any]
    approval: dict[str, Any]
    bundle_revision: str
    raw: dict[str, Any]


@dataclass
class ApprovalInfo:
    id: str = ""
    state: str = ""  # Pending | Approved | Denied | Expired | Used | "" (none)
    details: dict[str, Any] = field(default_factory=dict)  # reviewers, reasons, expiry ...


@dataclass
class Timings:
    """Monotonic seconds, measured by the pipeline; `None` when a stage did not run."""

    started: float = field(default_factory=time.monotonic)
    decision_s: float | None = None
    approval_wait_s: float | None = None
    upstream_ttft_s: float | None = None  # first response byte/event from upstream
    upstream_s: float | None = None
    total_s: float | None = None


@dataclass
class Exchange:
    """One request/response through the sidecar. Hooks read and enrich it; nothing else is shared."""

    request_id: str
    received_at: float  # wall clock (epoch seconds), for records
    method: str
    path: str
    query: str
    operation: str
    workload: Workload
    identity: Identity | None = None
    # Headers that may go upstream (anthropic-version, anthropic-beta, content-type, ...): the
    # caller's credentials were stripped before this object existed.
    forward_headers: dict[str, str] = field(default_factory=dict)
    content_type: str = ""
    body_bytes: bytes = b""  # exactly what the client sent
    body: dict[str, Any] | None = None  # parsed JSON object (None for GET/DELETE/multipart)
    # Informational: with any request masker installed, `body` (not `body_bytes`) is what is sent.
    body_modified: bool = False
    policy_input: dict[str, Any] | None = None
    decision: Decision | None = None
    approval: ApprovalInfo = field(default_factory=ApprovalInfo)
    masking_counts: dict[str, Counter[str]] = field(
        default_factory=lambda: {"upstream": Counter(), "client": Counter()})
    response_status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: dict[str, Any] | None = None  # JSON answer as the client got it (after masking)
    # Streams: the message rebuilt from the events the client got (after masking), for records.
    response_message: dict[str, Any] | None = None
    stream: bool = False
    usage: dict[str, Any] | None = None
    stop_reason: str | None = None
    rejection: Rejection | None = None
    error: str | None = None  # bounded cause when something failed after forwarding began
    recorded_request: bool = False
    timings: Timings = field(default_factory=Timings)
    # Free space for hooks (e.g. the recorder's sequence number); keys prefixed by the team.
    annotations: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Hook interfaces


class StreamMasker(Protocol):
    def feed(self, event: SseEvent) -> list[SseEvent]: ...
    def close(self) -> list[SseEvent]: ...


class ApprovalHook(Protocol):
    async def lookup(self, exchange: Exchange) -> None:
        """Before the policy: attach an existing approval for this exact request (sets
        `exchange.approval`), so `input.approval` carries it."""

    async def gate(self, exchange: Exchange) -> None:
        """The policy said require_approval: hold/create the approval. Return with
        `exchange.approval.state == "Approved"` to proceed, or raise a `Rejection`."""


class RequestMaskingHook(Protocol):
    def mask_request(self, exchange: Exchange) -> None:
        """Rewrite `exchange.body` in place before forwarding (it is re-serialised and sent)."""


class ResponseMaskingHook(Protocol):
    def mask_response_body(self, exchange: Exchange, body: dict[str, Any]) -> dict[str, Any]:
        """Return the body the client gets (editing `body` in place and returning it is fine)."""

    def stream_masker(self, exchange: Exchange) -> StreamMasker: ...


class RecordingHook(Protocol):
    def admit(self) -> None:
        """Raise (any exception; a `Rejection` keeps its status) when recording is unavailable."""

    async def record_request(self, exchange: Exchange) -> None:
        """Durable before the request is forwarded; raising refuses the request."""

    async def record_response(self, exchange: Exchange) -> None: ...


# ---------------------------------------------------------------------------------------------
# Explicit no-op defaults


class NoApprovals:
    """No approval workflow installed: `require_approval` is refused (fail closed)."""

    async def lookup(self, exchange: Exchange) -> None:
        return None

    async def gate(self, exchange: Exchange) -> None:
        decision = exchange.decision
        rule = decision.rule if decision else None
        raise forbidden(
            f"approval required by rule {rule!r}, but this sidecar has no approval workflow enabled",
            cause="approval_unavailable")


class PassthroughStreamMasker:
    def feed(self, event: SseEvent) -> list[SseEvent]:
        return [event]

    def close(self) -> list[SseEvent]:
        return []


class NoMasking:
    """Masking not installed: request and response pass unchanged."""

    def mask_request(self, exchange: Exchange) -> None:
        return None

    def mask_response_body(self, exchange: Exchange, body: dict[str, Any]) -> dict[str, Any]:
        return body

    def stream_masker(self, exchange: Exchange) -> StreamMasker:
        return PassthroughStreamMasker()


class NoRecording:
    """Recording not installed: nothing is written and every request is admitted."""

    def admit(self) -> None:
        return None

    async def record_request(self, exchange: Exchange) -> None:
        return None

    async def record_response(self, exchange: Exchange) -> None:
        return None


CleanupContext = Callable[["web.Application"], AsyncIterator[None]]


@dataclass
class Hooks:
    approval: ApprovalHook = field(default_factory=NoApprovals)
    request_masking: RequestMaskingHook = field(default_factory=NoMasking)
    response_masking: ResponseMaskingHook = field(default_factory=NoMasking)
    recording: RecordingHook = field(default_factory=NoRecording)
    # Long-lived resources of the hooks (recorder, Kubernetes client): aiohttp cleanup contexts,
    # entered before the sidecar serves and exited after it stops.
    contexts: list[CleanupContext] = field(default_factory=list)
