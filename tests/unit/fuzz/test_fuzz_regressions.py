"""Regressions found by the reliability work (security tests and fuzzing), one test each."""

from __future__ import annotations

from skillwarden_sidecar.metrics import BoundedLabel


def test_personal_data_in_a_label_value_is_counted_as_other() -> None:
    # Found by tests/integration/reliability::test_pii_in_urls_and_headers_stays_out_of_logs_and_metrics:
    # GET /v1/skills/<SSN> exported the SSN as the `skill` label; an e-mail as `model` did too.
    label = BoundedLabel(100)
    for value in (
        "536-22-8726",
        "carol@example.com",
        "claude-x-carol@example.com",
        "skill-536228726",
        "4111111111111111",
        "+1-202-555-0143",
    ):
        assert label(value) == "other", value
    for value in ("xlsx", "pdf+xlsx", "claude-sonnet-4-5", "skill_01AbCdEfGh", "US_SSN"):
        assert label(value) == value


def test_a_non_string_type_in_a_request_body_is_masked_not_a_crash() -> None:
    # Found by test_request_masking_keeps_any_body_a_json_object: `{"system": {"type": []}}`
    # raised TypeError (unhashable list) inside the masker, so the sidecar answered 500.
    from collections import Counter

    from skillwarden_sidecar.masking import BUILTIN_ENTITIES, Masker, MaskingSpec
    from skillwarden_sidecar.masking.structured import mask_json, mask_request_body

    masker = Masker(MaskingSpec(BUILTIN_ENTITIES, {}, hmac_key=b"k" * 16, hmac_key_id="k"))
    for kind in ([], {}, 1, None, ["redacted_thinking"]):
        body = {
            "system": {"type": kind, "text": "SSN 536-22-8726"},
            "messages": [{"role": "user", "content": [{"type": kind, "data": "mail bob@example.com"}]}],
        }
        masked, counts = mask_request_body(masker, body)
        assert "536-22-8726" not in str(masked) and "bob@example.com" not in str(masked)
        assert counts["US_SSN"] == 1
        assert mask_json(masker, {"type": kind}, Counter()) == {"type": kind}


def test_a_policy_number_beyond_64_bits_is_an_invalid_policy_not_a_crash() -> None:
    # Found by the atheris policy harness: maxTokens (any number) beyond 64 bits raised TypeError
    # inside the compiler (`skillwarden policy compile -f` on YAML can carry such a number).
    from skillwarden_operator.bundle import build_bundle

    policy = {
        "apiVersion": "skillwarden.io/v1alpha1",
        "kind": "SkillPolicy",
        "metadata": {"name": "big", "namespace": "finance"},
        "spec": {
            "defaultAction": "deny",
            "subjects": [
                {"name": "bot", "serviceAccounts": ["report-bot"], "models": ["claude-*"], "maxTokens": 2**70}
            ],
        },
    }
    bundle = build_bundle("finance", [policy])
    assert bundle.invalid and "64-bit" in str(bundle.invalid)


def test_a_container_env_that_is_not_a_list_is_denied_not_a_crash() -> None:
    # Found by the atheris admission harness: `env` as an object raised AttributeError inside
    # injection.plan (the webhook guard turned it into an opaque denial).
    import pytest

    from skillwarden_operator import injection

    cases = (("env", {"secretName": "s"}), ("envFrom", "x"), ("volumeMounts", [1]), ("ports", {}))
    for field, value in cases:
        pod = {"metadata": {"name": "p", "annotations": {"skillwarden.io/inject": "true"}},
               "spec": {"containers": [{"name": "x", field: value}]}}
        with pytest.raises(injection.InjectionDenied, match=field):
            injection.plan(pod, "finance", injection.InjectionSettings())
