"""Runs the SkillApproval admission handlers in a real kopf operator, for the integration tests.

`kopf run --standalone approvals_webhook_harness.py` with SKW_WEBHOOK_PORT/CERT/KEY/CA/NAME set:
a kopf WebhookServer on 127.0.0.1 with a certificate from the dev CA, registered by kopf's managed
mode as Mutating/ValidatingWebhookConfiguration (url + caBundle) on the real kube-apiserver.
Until the operator team's `skillwarden operator` loads HANDLER_MODULES, this is how the webhook runs.
"""

from __future__ import annotations

import os
from typing import Any

import kopf

import skillwarden_operator.approvals_admission  # noqa: F401 - registers the handlers


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.admission.server = kopf.WebhookServer(
        addr="127.0.0.1",
        port=int(os.environ["SKW_WEBHOOK_PORT"]),
        host="127.0.0.1",
        certfile=os.environ["SKW_WEBHOOK_CERT"],
        pkeyfile=os.environ["SKW_WEBHOOK_KEY"],
        cafile=os.environ["SKW_WEBHOOK_CA"],
    )
    settings.admission.managed = os.environ["SKW_WEBHOOK_NAME"]
    settings.posting.enabled = False
