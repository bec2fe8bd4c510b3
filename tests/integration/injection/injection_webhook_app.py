"""A minimal kopf operator with only the injection handler: what `kopf run` starts in the tests.

The webhook server listens on 127.0.0.1 with the certificate the test issued into the shared
Secret (webhook_certs.CertRotator); the test registers the MutatingWebhookConfiguration itself,
as the chart does (kopf's managed mode would write `timeoutSeconds: 30` and no selectors).
"""

from __future__ import annotations

import os
from typing import Any

import kopf

from skillwarden_operator import injection_handlers


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    tls = os.environ["INJECTION_TEST_TLS_DIR"]
    settings.admission.server = kopf.WebhookServer(
        addr="127.0.0.1",
        port=int(os.environ["INJECTION_TEST_WEBHOOK_PORT"]),
        certfile=f"{tls}/tls.crt",
        pkeyfile=f"{tls}/tls.key",
        cafile=f"{tls}/ca.crt",
    )
    settings.admission.managed = None
    settings.posting.level = 0
    injection_handlers.install(None, settings, memo)
