"""Regressions found by the reliability work (security tests and fuzzing), one test each."""

from __future__ import annotations

from skillwarden_sidecar.metrics import BoundedLabel


def test_personal_data_in_a_label_value_is_counted_as_other() -> None:
    # Found by tests/integration/reliability::test_pii_in_urls_and_headers_stays_out_of_logs_and_metrics:
    # GET /v1/skills/<SSN> exported the SSN as the `skill` label; an e-mail as `model` did too.
    label = BoundedLabel(100)
    for value in ("536-22-8726", "carol@example.com", "claude-x-carol@example.com", "skill-536228726",
                  "4111111111111111", "+1-202-555-0143"):
        assert label(value) == "other", value
    for value in ("xlsx", "pdf+xlsx", "claude-sonnet-4-5", "skill_01AbCdEfGh", "US_SSN"):
        assert label(value) == value
