"""Configuration: one table, flags over env over defaults, errors name the setting, docs list all."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from skillwarden_sidecar.config import SETTINGS, ConfigError, add_arguments, from_args, from_sources

DOCS = Path(__file__).resolve().parents[3] / "docs" / "sidecar.md"


def test_flags_win_over_env_over_defaults(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("k")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--port", "9999", "--provider-key-file", str(key)])
    config = from_args(args, {"SKILLWARDEN_PORT": "1111", "SKILLWARDEN_NAMESPACE": "finance",
                              "SKILLWARDEN_OIDC_AUDIENCE": "a, b", "SKILLWARDEN_JWT_LEEWAY": "10"})
    assert config.port == 9999 and config.namespace == "finance"
    assert config.oidc_audience == ("a", "b") and config.jwt_leeway == 10.0
    assert config.admin_port == 9091 and config.opa_timeout == 0.25 and config.listen_host == "127.0.0.1"


@pytest.mark.parametrize(("env", "flag", "problem"), [
    ({"SKILLWARDEN_ADMIN_PORT": "-1"}, "--admin-port", "TCP port"),
    ({"SKILLWARDEN_OPA_URL": "opa:8181"}, "--opa-url", "http(s) URL"),
    ({"SKILLWARDEN_JWKS_CACHE_TTL": "60"}, "--jwks-cache-ttl", "between 300 and 900"),
    ({"SKILLWARDEN_JWKS_REFETCH_INTERVAL": "5"}, "--jwks-refetch-interval", "between 30 and 60"),
    ({"SKILLWARDEN_JWT_ALGORITHMS": "none"}, "--jwt-algorithms", "none not allowed"),
    ({"SKILLWARDEN_MAX_BODY_BYTES": "0"}, "--max-body-bytes", "> 0"),
    ({"SKILLWARDEN_LOG_LEVEL": "chatty"}, "--log-level", "one of"),
    ({"SKILLWARDEN_SA_ISSUER": "not a url"}, "--sa-issuer", "http(s) URL"),
    ({"SKILLWARDEN_JWT_LEEWAY": "300"}, "--jwt-leeway", "between 0 and 60"),
    ({"SKILLWARDEN_UPSTREAM_URL": "ftp://x"}, "--upstream-url", "http(s) URL"),
    ({"SKILLWARDEN_OIDC_ISSUER": "https://login.example.com"}, "--oidc-audience", "required when"),
    ({"SKILLWARDEN_SA_TOKEN_REVIEW_URL": "https://k8s"}, "--sa-token-review-url", "needs --sa-issuer"),
])
def test_bad_values_name_the_setting(tmp_path: Path, env: dict[str, str], flag: str, problem: str) -> None:
    key = tmp_path / "key"
    key.write_text("k")
    base = {"SKILLWARDEN_NAMESPACE": "finance", "SKILLWARDEN_PROVIDER_KEY_FILE": str(key)}
    with pytest.raises(ConfigError) as failed:
        from_sources({}, {**base, **env})
    assert flag in str(failed.value) and problem in str(failed.value)


def test_every_setting_is_documented() -> None:
    docs = DOCS.read_text()
    missing = [s.flag for s in SETTINGS if s.flag not in docs or s.env not in docs]
    assert missing == []
