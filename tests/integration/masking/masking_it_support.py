"""Constants and the handle shared by the masking integration tests (uniquely named: several
test folders have a conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from skillwarden_sidecar import app as sidecar_app
from skillwarden_sidecar.masking import sidecar_hook
from skillwarden_sidecar.pipeline import Exchange

NAMESPACE = "finance"
WORKLOAD_SA = "report-bot"
PROVIDER_KEY = "sk-ant-api03-provider-key-known-only-to-the-sidecar"

POLICY: dict[str, Any] = {
    "apiVersion": "skillwarden.io/v1alpha1", "kind": "SkillPolicy",
    "metadata": {"name": "masking-test", "namespace": NAMESPACE},
    "spec": {
        "defaultAction": "deny",
        "subjects": [{"name": "bot", "serviceAccounts": [WORKLOAD_SA], "models": ["claude-*"],
                      "tools": ["lookup"], "maxTokens": 4096}],
        "masking": {"upstream": ["EMAIL_ADDRESS", "US_SSN"], "client": ["CREDIT_CARD", "US_SSN"],
                    "operators": {"CREDIT_CARD": "partial", "EMAIL_ADDRESS": "hmac"}},
    },
}


class RecordProbe:
    """A recording hook that keeps what a session record may hold: `MaskingHook.record_view`."""

    def __init__(self, hook: sidecar_hook.MaskingHook) -> None:
        self.hook = hook
        self.records: list[dict[str, Any]] = []

    def admit(self) -> None:
        return None

    async def record_request(self, exchange: Exchange) -> None:
        return None

    async def record_response(self, exchange: Exchange) -> None:
        self.records.append(self.hook.record_view(exchange))


@dataclass
class Sidecar:
    url: str
    app: web.Application
    hook: sidecar_hook.MaskingHook
    probe: RecordProbe

    def masked_total(self, entity: str, direction: str) -> float:
        registry = self.app[sidecar_app.METRICS].registry
        value = registry.get_sample_value("skillwarden_masked_entities_total",
                                          {"entity": entity, "direction": direction})
        return float(value or 0.0)
