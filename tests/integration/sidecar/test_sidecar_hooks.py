"""The hook plumbing other teams rely on: request masking changes what the upstream sees,
response masking (JSON and SSE) changes what the client sees, counts become metrics."""

from __future__ import annotations

from collections import Counter
from typing import Any

import anthropic
from sidecar_support import SidecarFactory

from skillwarden_devstack.fake_claude import FakeClaude
from skillwarden_sidecar.pipeline import Exchange, Hooks
from skillwarden_sidecar.sse import SseEvent

SECRET = "EMP-123456"
MODEL = "claude-sonnet-4-6"


def _scrub(text: str, counts: Counter[str]) -> str:
    if SECRET in text:
        counts["EMPLOYEE_ID"] += text.count(SECRET)
        return text.replace(SECRET, "[EMPLOYEE_ID]")
    return text


class ToyStreamMasker:
    """Holds nothing back (a toy: the real masker holds back partial matches)."""

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange

    def feed(self, event: SseEvent) -> list[SseEvent]:
        event.data = _scrub(event.data, self.exchange.masking_counts["client"])
        return [event]

    def close(self) -> list[SseEvent]:
        return []


class ToyMasking:
    def __init__(self) -> None:
        self.saw_decision: list[Any] = []

    def mask_request(self, exchange: Exchange) -> None:
        assert exchange.body is not None
        self.saw_decision.append(exchange.decision.masking if exchange.decision else None)
        for message in exchange.body["messages"]:
            if isinstance(message["content"], str):
                message["content"] = _scrub(message["content"], exchange.masking_counts["upstream"])
        exchange.body_modified = True

    def mask_response_body(self, exchange: Exchange, body: dict[str, Any]) -> dict[str, Any]:
        for block in body.get("content", []):
            if block.get("type") == "text":
                block["text"] = _scrub(block["text"], exchange.masking_counts["client"])
        return body

    def stream_masker(self, exchange: Exchange) -> ToyStreamMasker:
        return ToyStreamMasker(exchange)


async def test_masking_hooks_change_both_directions(sidecar_factory: SidecarFactory,
                                                    fake: tuple[FakeClaude, str]) -> None:
    upstream, _ = fake
    masking = ToyMasking()
    upstream.settings.reply_text = f"Employee {SECRET} earns a lot"
    async with sidecar_factory(hooks=Hooks(request_masking=masking, response_masking=masking)) as sidecar:
        sdk = anthropic.AsyncAnthropic(base_url=sidecar.url, api_key="placeholder", max_retries=0)
        request: dict[str, Any] = {"model": MODEL, "max_tokens": 64,
                                   "messages": [{"role": "user", "content": f"Look up {SECRET} please"}]}
        answer = await sdk.messages.create(**request)
        assert answer.content[0].type == "text"
        assert answer.content[0].text == "Employee [EMPLOYEE_ID] earns a lot"
        async with sdk.messages.stream(**request) as stream:
            streamed = await stream.get_final_message()
        assert streamed.content[0].type == "text"
        assert streamed.content[0].text == "Employee [EMPLOYEE_ID] earns a lot"
        for received in upstream.received:
            assert SECRET not in received.body.decode() and "[EMPLOYEE_ID]" in received.body.decode()
        assert masking.saw_decision[0] is not None  # the policy's masking section reached the hook
        assert sidecar.sample("skillwarden_masked_entities_total",
                              {"entity": "EMPLOYEE_ID", "direction": "upstream"}) == 2
        assert sidecar.sample("skillwarden_masked_entities_total",
                              {"entity": "EMPLOYEE_ID", "direction": "client"}) == 2
