"""Constants and the handle shared by the masking integration tests (uniquely named: several
test folders have a conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from skillwarden_sidecar import app as sidecar_app
from skillwarden_sidecar.masking import sidecar_hook

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


@dataclass
class Sidecar:
    url: str
    app: web.Application
    hook: sidecar_hook.MaskingHook

    def masked_total(self, entity: str, direction: str) -> float:
        registry = self.app[sidecar_app.METRICS].registry
        value = registry.get_sample_value("skillwarden_masked_entities_total",
                                          {"entity": entity, "direction": direction})
        return float(value or 0.0)
