"""Sidecar configuration: every setting is a command-line flag AND an environment variable.

One table (`SETTINGS`) is the single source: it builds the argparse flags, reads the environment,
validates, and `docs/sidecar.md` lists the same names (a unit test keeps them in step). A bad
value stops start-up with `ConfigError`, whose message names the flag and the variable.
"""

from __future__ import annotations

import argparse
import os
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    def __init__(self, setting: Setting, problem: str) -> None:
        super().__init__(f"invalid setting {setting.flag} (env {setting.env}): {problem}")
        self.setting = setting


@dataclass(frozen=True)
class Setting:
    name: str
    help: str
    default: str | None  # as text, like the environment would give it; None = required/unset
    parse: Callable[[str], Any]
    required: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "SKILLWARDEN_" + self.name.upper()


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("must be a TCP port 0-65535 (0 = pick a free one)")
    return value


def _url(text: str) -> str:
    parsed = urllib.parse.urlsplit(text)
    if parsed.scheme not in {"http", "https"} or not parsed.hostname:
        raise ValueError("must be an http(s) URL with a host")
    return text.rstrip("/")


def _optional_url(text: str) -> str:
    return _url(text) if text else ""


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("must be a number > 0")
    return value


def _bounded(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = float(text)
        if not low <= value <= high:
            raise ValueError(f"must be between {low:g} and {high:g}")
        return value
    return parse


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be an integer > 0")
    return value


def _text(text: str) -> str:
    return text.strip()


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


_ALLOWED_ALGORITHMS = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
                       "EdDSA"}


def _algorithms(text: str) -> tuple[str, ...]:
    values = _csv(text)
    if not values:
        raise ValueError("needs at least one algorithm")
    bad = [v for v in values if v not in _ALLOWED_ALGORITHMS]
    if bad:
        # Symmetric (HS*) and "none" are refused outright: a shared secret cannot be a public
        # JWKS key, and accepting HS* with an RSA key is the classic confusion attack.
        allowed = ", ".join(sorted(_ALLOWED_ALGORITHMS))
        raise ValueError(f"{', '.join(bad)} not allowed; choose from {allowed}")
    return values


def _readable_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise ValueError(f"{text} is not a readable file")
    return path


def _optional_file(text: str) -> Path | None:
    return _readable_file(text) if text else None


def _log_level(text: str) -> str:
    value = text.upper()
    if value not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
    return value


SETTINGS: tuple[Setting, ...] = (
    # Listeners
    Setting("listen_host", "address for application traffic (pod-local)", "127.0.0.1", _text),
    Setting("port", "port for application traffic", "8790", _port),
    Setting("admin_host", "address for /metrics, /healthz, /readyz", "0.0.0.0", _text),  # noqa: S104
    Setting("admin_port", "port for /metrics, /healthz, /readyz", "9091", _port),
    # Workload identity (downward API)
    Setting("namespace", "namespace of the pod (downward API metadata.namespace)", None, _text, True),
    Setting("pod_name", "name of the pod (downward API metadata.name)", "", _text),
    Setting("service_account", "service account of the pod (downward API spec.serviceAccountName)",
            "default", _text),
    # Upstream
    Setting("upstream_url", "base URL of the Claude API", "https://api.anthropic.com", _url),
    Setting("provider_key_file", "file holding the provider API key (re-read when it changes)",
            None, _readable_file, True),
    Setting("upstream_connect_timeout", "seconds to connect to the upstream", "10", _positive_float),
    Setting("upstream_read_timeout", "seconds of silence allowed while reading from the upstream",
            "600", _positive_float),
    Setting("upstream_ca_file", "CA bundle for the upstream's TLS certificate (default: system)", "",
            _optional_file),
    Setting("upstream_connections", "maximum pooled connections to the upstream", "100", _positive_int),
    # Policy
    Setting("opa_url", "OPA server (the injected opa container)", "http://127.0.0.1:8181", _url),
    Setting("opa_decision_path", "OPA data path of the decision", "skillwarden/decision", _text),
    Setting("opa_timeout", "seconds to wait for a decision before denying (counted from dispatch to OPA)",
            "0.25", _bounded(0.001, 10)),
    Setting("opa_max_inflight", "decisions in flight to OPA at once; more wait in the sidecar (at most 2 s, "
            "then denied)", "4", _positive_int),
    Setting("opa_patterns_path", "OPA data path of the prompt pattern table the sidecar matches itself",
            "skillwarden/policies/prompt_patterns", _text),
    Setting("decision_cache_ttl", "seconds a decision is reused for requests that differ only in prompt "
            "text (0: ask OPA every time; dropped at once when the bundle revision changes)", "1",
            _bounded(0, 30)),
    # Caller tokens (RFC 8725)
    Setting("oidc_issuer", "OIDC issuer URL whose tokens callers may present (empty: none)", "", _text),
    Setting("oidc_audience", "required audience(s) of OIDC tokens, comma separated", "", _csv),
    Setting("oidc_jwks_url", "JWKS URL of the OIDC issuer (default: from discovery)", "", _optional_url),
    Setting("oidc_jwks_file", "JWKS file of the OIDC issuer (instead of fetching)", "", _optional_file),
    Setting("sa_issuer", "Kubernetes service-account token issuer (empty: none)", "", _text),
    Setting("sa_audience", "required audience(s) of service-account tokens, comma separated",
            "skillwarden", _csv),
    Setting("sa_jwks_url", "JWKS URL of the service-account issuer (default: <issuer>/openid/v1/jwks)",
            "", _optional_url),
    Setting("sa_jwks_file", "JWKS file of the service-account issuer (instead of fetching)", "",
            _optional_file),
    Setting("sa_token_review_url", "Kubernetes API URL for TokenReview of service-account tokens "
            "(empty: off; e.g. https://kubernetes.default.svc)", "", _optional_url),
    Setting("jwks_ca_file", "CA bundle for fetching discovery/JWKS documents (and TokenReview)", "",
            _optional_file),
    Setting("jwks_token_file", "bearer token sent when fetching discovery/JWKS and for TokenReview "
            "(e.g. the pod's SA token)", "", _optional_file),
    Setting("jwt_algorithms", "accepted JWT algorithms (never taken from the token)", "RS256,ES256",
            _algorithms),
    Setting("jwt_leeway", "clock-skew leeway in seconds for exp/nbf/iat", "30", _bounded(0, 60)),
    Setting("groups_claim", "claim holding the caller's groups", "groups", _text),
    Setting("email_claim", "claim holding the caller's e-mail", "email", _text),
    Setting("jwks_cache_ttl", "seconds a fetched JWKS is fresh", "600", _bounded(300, 900)),
    Setting("jwks_refetch_interval", "minimum seconds between JWKS fetches for unknown key ids", "30",
            _bounded(30, 60)),
    # Limits
    Setting("max_body_bytes", "largest request body accepted", str(32 * 1024 * 1024), _positive_int),
    Setting("max_header_line", "longest request line / header line accepted (bytes)", "8190",
            _positive_int),
    Setting("max_header_field", "longest header field accepted (bytes)", "8190", _positive_int),
    Setting("log_level", "log level", "INFO", _log_level),
)

_BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class SidecarConfig:
    namespace: str
    provider_key_file: Path
    listen_host: str = "127.0.0.1"
    port: int = 8790
    admin_host: str = "0.0.0.0"  # noqa: S104 - scraped by Prometheus from outside the pod
    admin_port: int = 9091
    pod_name: str = ""
    service_account: str = "default"
    upstream_url: str = "https://api.anthropic.com"
    upstream_connect_timeout: float = 10.0
    upstream_read_timeout: float = 600.0
    upstream_ca_file: Path | None = None
    upstream_connections: int = 100
    opa_url: str = "http://127.0.0.1:8181"
    opa_decision_path: str = "skillwarden/decision"
    opa_timeout: float = 0.25
    opa_max_inflight: int = 4
    opa_patterns_path: str = "skillwarden/policies/prompt_patterns"
    decision_cache_ttl: float = 1.0
    oidc_issuer: str = ""
    oidc_audience: tuple[str, ...] = ()
    oidc_jwks_url: str = ""
    oidc_jwks_file: Path | None = None
    sa_issuer: str = ""
    sa_audience: tuple[str, ...] = ("skillwarden",)
    sa_jwks_url: str = ""
    sa_jwks_file: Path | None = None
    sa_token_review_url: str = ""
    jwks_ca_file: Path | None = None
    jwks_token_file: Path | None = None
    jwt_algorithms: tuple[str, ...] = ("RS256", "ES256")
    jwt_leeway: float = 30.0
    groups_claim: str = "groups"
    email_claim: str = "email"
    jwks_cache_ttl: float = 600.0
    jwks_refetch_interval: float = 30.0
    max_body_bytes: int = 32 * 1024 * 1024
    max_header_line: int = 8190
    max_header_field: int = 8190
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if self.oidc_issuer and not self.oidc_audience:
            raise ConfigError(_BY_NAME["oidc_audience"], "required when --oidc-issuer is set (RFC 8725: "
                              "tokens are audience-bound)")
        if self.sa_issuer and not self.sa_audience:
            raise ConfigError(_BY_NAME["sa_audience"], "required when --sa-issuer is set")
        if self.sa_token_review_url and not self.sa_issuer:
            raise ConfigError(_BY_NAME["sa_token_review_url"], "needs --sa-issuer")
        if self.oidc_issuer and self.oidc_issuer == self.sa_issuer:
            raise ConfigError(_BY_NAME["sa_issuer"], "must differ from --oidc-issuer")
        for name in ("oidc_issuer", "sa_issuer"):
            value = getattr(self, name)
            if value:
                try:
                    _url(value)
                except ValueError as error:
                    raise ConfigError(_BY_NAME[name], str(error)) from None


_FIELDS = {f.name for f in fields(SidecarConfig)}
assert _FIELDS == set(_BY_NAME), "SETTINGS and SidecarConfig must list the same settings"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for setting in SETTINGS:
        shown = "required" if setting.required else f"default {setting.default!r}"
        parser.add_argument(setting.flag, dest=setting.name, default=None, metavar=setting.name.upper(),
                            help=f"{setting.help} [env {setting.env}; {shown}]")


def from_sources(flags: Mapping[str, str | None], environ: Mapping[str, str]) -> SidecarConfig:
    """Flags win over environment variables, which win over defaults."""
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = flags.get(setting.name)
        if raw is None:
            raw = environ.get(setting.env)
        if raw is None:
            raw = setting.default
        if raw is None or (setting.required and raw == ""):
            raise ConfigError(setting, "is required")
        try:
            values[setting.name] = setting.parse(raw)
        except ValueError as error:
            raise ConfigError(setting, str(error) or "bad value") from None
    return SidecarConfig(**values)


def from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> SidecarConfig:
    flags = {s.name: getattr(args, s.name, None) for s in SETTINGS}
    return from_sources(flags, os.environ if environ is None else environ)
