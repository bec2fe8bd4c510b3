"""Masking through the real sidecar, with the official `anthropic` SDK as the client, real OPA
deciding from a compiled SkillPolicy, and the fake Claude upstream recording what it received."""

from __future__ import annotations

import json
from typing import Any

import anthropic
from masking_it_support import Sidecar

from skillwarden_devstack import fake_claude

MODEL = "claude-sonnet-4-6"
CARD = "4111 1111 1111 1111"


def sdk(sidecar: Sidecar) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=sidecar.url, api_key="placeholder", max_retries=0, timeout=30)


async def test_streamed_card_spelled_across_deltas_reaches_the_client_masked(
        sidecar: Sidecar, upstream: tuple[fake_claude.FakeClaude, str, Any]) -> None:
    fake = upstream[0]
    fake.settings.reply_text = f"Your card {CARD} and SSN 536-22-8472 are on file."
    fake.settings.words_per_delta = 1  # the card arrives in four deltas: "4111 ", "1111 ", ...
    pieces: list[str] = []
    async with sdk(sidecar).messages.stream(model=MODEL, max_tokens=64,
                                            messages=[{"role": "user", "content": "status?"}]) as stream:
        async for text in stream.text_stream:
            pieces.append(text)
        final = await stream.get_final_message()
    text = "".join(pieces)
    assert text == "Your card ****1111 and SSN [US_SSN] are on file."
    assert final.content[0].type == "text" and final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert all("4111" not in piece for piece in pieces) and len(pieces) > 3
    assert sidecar.masked_total("CREDIT_CARD", "client") == 1
    assert sidecar.masked_total("US_SSN", "client") == 1


async def test_prompt_email_reaches_upstream_masked_when_policy_says_upstream(
        sidecar: Sidecar, upstream: tuple[fake_claude.FakeClaude, str, Any]) -> None:
    fake = upstream[0]
    answer = await sdk(sidecar).messages.create(
        model=MODEL, max_tokens=64, system="Reply to jane.doe@example.com",
        messages=[{"role": "user", "content": f"Bill {CARD} for jane.doe@example.com, SSN 536-22-8472"}])
    seen = fake.received[-1].json()
    upstream_prompt = seen["messages"][0]["content"]
    assert "jane.doe@example.com" not in str(seen) and "536-22-8472" not in str(seen)
    assert upstream_prompt.startswith(f"Bill {CARD} for <EMAIL_ADDRESS:hm_")  # card is client-only
    assert seen["system"].startswith("Reply to <EMAIL_ADDRESS:hm_")
    # The reply echoes the (already masked) prompt; the card is masked on the way back.
    assert answer.content[0].type == "text"
    assert "****1111" in answer.content[0].text and CARD not in answer.content[0].text
    assert sidecar.masked_total("EMAIL_ADDRESS", "upstream") == 2
    assert sidecar.masked_total("US_SSN", "upstream") == 1
    assert sidecar.masked_total("EMAIL_ADDRESS", "record") >= 2


async def test_tool_input_streamed_as_json_fragments_stays_valid_and_masked(
        sidecar: Sidecar, upstream: tuple[fake_claude.FakeClaude, str, Any]) -> None:
    fake = upstream[0]
    tools: Any = [{"name": "lookup", "description": "look up", "input_schema": {"type": "object"}}]
    async with sdk(sidecar).messages.stream(model=MODEL, max_tokens=64, tools=tools, messages=[
            {"role": "user", "content": f"charge {CARD} today"}]) as stream:
        final = await stream.get_final_message()
    tool_use = next(block for block in final.content if block.type == "tool_use")
    assert tool_use.input == {"query": "charge ****1111 today", "limit": 3}
    assert fake.received[-1].json()["messages"][0]["content"] == f"charge {CARD} today"


async def test_records_are_masked_with_every_detector_whatever_the_policy_lists(
        sidecar: Sidecar, upstream: tuple[fake_claude.FakeClaude, str, Any]) -> None:
    fake = upstream[0]
    iban = "DE89 3704 0044 0532 0130 00"
    fake.settings.reply_text = f"Transfer to {iban} confirmed for card {CARD}."
    prompt = f"Pay from {iban}, card {CARD}, key AKIAIOSFODNN7EXAMPLE"
    async with sdk(sidecar).messages.stream(model=MODEL, max_tokens=64,
                                            messages=[{"role": "user", "content": prompt}]) as stream:
        final = await stream.get_final_message()
    # The policy masks neither IBANs nor AWS keys for the app or the provider ...
    assert final.content[0].type == "text" and iban in final.content[0].text
    assert "AKIAIOSFODNN7EXAMPLE" in str(fake.received[-1].json())
    # ... but the record holds no value of any entity, request or (streamed) response.
    record = sidecar.probe.records[-1]
    stored = json.dumps(record)
    for value in (iban, CARD, "AKIAIOSFODNN7EXAMPLE", "4111"):
        assert value not in stored
    # The policy's operators apply to records too (partial for cards).
    recorded_prompt = record["request"]["messages"][0]["content"]
    assert recorded_prompt == "Pay from [IBAN_CODE], card ****1111, key [AWS_ACCESS_KEY]"
    assert record["response"]["content"][0]["text"] == "Transfer to [IBAN_CODE] confirmed for card ****1111."
    assert record["hmac_key_id"].startswith("sha256:") and record["detector_version"]
    assert record["counts"]["record"]["IBAN_CODE"] == 2
