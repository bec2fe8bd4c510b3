"""A minimal kopf operator with only the injection handler: what `kopf run` starts in the tests.

The webhook server listens on 127.0.0.1 with the certificate of the shared Secret
(`certificates.mode=secret`: install() creates it through the API and patches the caBundle); the
test registers the MutatingWebhookConfiguration itself, as the chart does (kopf's managed mode
would write `timeoutSeconds: 30`).
"""

from __future__ import annotations

import os
from typing import Any

import kopf

from skillwarden_operator import injection_handlers


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # No certificate here: with SKILLWARDEN_CERT_MODE=secret, install() replaces this server by
    # one serving the shared Secret's certificate (created or rotated at start), as in the chart.
    settings.admission.server = kopf.WebhookServer(
        addr="127.0.0.1", host="127.0.0.1", port=int(os.environ["INJECTION_TEST_WEBHOOK_PORT"]))
    settings.admission.managed = None
    settings.posting.level = 0
    injection_handlers.install(None, settings, memo)
