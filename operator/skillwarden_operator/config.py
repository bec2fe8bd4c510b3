"""`skillwarden operator` settings: every one is a flag and a `SKILLWARDEN_OPERATOR_*` variable
(flags win). docs/operator.md lists the same table."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from skillwarden_operator.policy_model import DEFAULT_MIN_RETENTION_DAYS

FINALIZER = "skillwarden.io/finalizer"
ANNOTATION_PREFIX = "skillwarden.io"
MANAGED_WEBHOOK_NAME = "skillwarden.io"


@dataclass(frozen=True)
class OperatorConfig:
    bundle_host: str = "127.0.0.1"
    bundle_port: int = 8080
    max_long_poll_seconds: float = 120.0
    admission: bool = True
    webhook_addr: str = "127.0.0.1"
    webhook_port: int = 9443
    webhook_host: str = ""  # host in the webhook URL given to the API server; default: webhook_addr
    webhook_cert_dir: Path | None = None  # tls.crt + tls.key (+ ca.crt); default: self-signed
    webhook_managed: str = MANAGED_WEBHOOK_NAME  # "" = the webhook configuration is shipped (Helm)
    min_retention_days: int = DEFAULT_MIN_RETENTION_DAYS
    namespaces: tuple[str, ...] = ()  # empty: cluster-wide
    log_level: str = "INFO"


# flag -> (env var, help). Types come from the dataclass defaults.
OPTIONS: dict[str, tuple[str, str]] = {
    "bundle_host": ("SKILLWARDEN_OPERATOR_BUNDLE_HOST", "address the bundle service listens on"),
    "bundle_port": ("SKILLWARDEN_OPERATOR_BUNDLE_PORT", "port of the bundle service (+ /healthz, /metrics)"),
    "max_long_poll_seconds": ("SKILLWARDEN_OPERATOR_MAX_LONG_POLL_SECONDS",
                              "cap on how long a long-polling OPA request is held open"),
    "admission": ("SKILLWARDEN_OPERATOR_ADMISSION", "serve the validating admission webhook (true/false)"),
    "webhook_addr": ("SKILLWARDEN_OPERATOR_WEBHOOK_ADDR", "address the admission webhook server listens on"),
    "webhook_port": ("SKILLWARDEN_OPERATOR_WEBHOOK_PORT", "port of the admission webhook server (HTTPS)"),
    "webhook_host": ("SKILLWARDEN_OPERATOR_WEBHOOK_HOST",
                     "host name or IP the API server uses to reach the webhook (default: the address)"),
    "webhook_cert_dir": ("SKILLWARDEN_OPERATOR_WEBHOOK_CERT_DIR",
                         "directory with tls.crt, tls.key and ca.crt (default: a self-signed certificate)"),
    "webhook_managed": ("SKILLWARDEN_OPERATOR_WEBHOOK_MANAGED",
                        "name of the ValidatingWebhookConfiguration the operator keeps up to date "
                        "(empty: it is installed by Helm)"),
    "min_retention_days": ("SKILLWARDEN_OPERATOR_MIN_RETENTION_DAYS",
                           "retention floor: policies keeping records for fewer days are rejected"),
    "namespaces": ("SKILLWARDEN_OPERATOR_NAMESPACES", "comma-separated namespaces to serve (default: all)"),
    "log_level": ("SKILLWARDEN_OPERATOR_LOG_LEVEL", "DEBUG, INFO, WARNING or ERROR"),
}


class ConfigError(ValueError):
    pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = OperatorConfig()
    for name, (env, help_text) in OPTIONS.items():
        default = getattr(defaults, name)
        shown = ",".join(default) if isinstance(default, tuple) else default
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None,
                            help=f"{help_text} (env {env}; default {shown!r})")


def _convert(name: str, raw: str) -> object:
    default = getattr(OperatorConfig(), name)
    try:
        if isinstance(default, bool):
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError("expected true or false")
            return raw.lower() in ("true", "1", "yes")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, tuple):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        if name == "webhook_cert_dir":
            return Path(raw) if raw else None
    except ValueError as error:
        raise ConfigError(f"--{name.replace('_', '-')}: {raw!r}: {error}") from error
    return raw


def from_args(args: argparse.Namespace, environ: dict[str, str] | None = None) -> OperatorConfig:
    env = dict(os.environ if environ is None else environ)
    values: dict[str, object] = {}
    for name, (variable, _) in OPTIONS.items():
        raw = getattr(args, name, None)
        if raw is None:
            raw = env.get(variable)
        if raw is not None:
            values[name] = _convert(name, str(raw))
    config = OperatorConfig(**values)  # type: ignore[arg-type]
    if config.min_retention_days < 1:
        raise ConfigError("--min-retention-days must be at least 1")
    if config.webhook_cert_dir is not None and not (config.webhook_cert_dir / "tls.crt").is_file():
        raise ConfigError(f"--webhook-cert-dir: {config.webhook_cert_dir}/tls.crt not found")
    return config
