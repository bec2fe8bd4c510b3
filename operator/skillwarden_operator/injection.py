"""Sidecar injection as a pure function: (pod, namespace, settings) -> skip | mutation | denial.

Nothing here talks to Kubernetes; `injection_handlers` wires it into kopf. The decision, in order:

1. never touch system namespaces or the operator's own pods (whatever they are annotated with);
2. opt-in is `skillwarden.io/inject: "true"` as an annotation or a label; `"false"` in either wins;
3. every `skillwarden.io/*` annotation is validated; unknown keys, bad quantities, port conflicts
   and attempts to switch recording/masking off are a denial (`InjectionDenied`, HTTP 400);
4. the pod is brought to its injected shape: webhook-owned parts (containers `skillwarden` and
   `opa`, volumes `skillwarden-*`) are rebuilt from scratch, user parts are only ever added to.
   Re-running on an injected pod therefore yields the same pod and an empty patch (idempotent,
   and safe under `reinvocationPolicy: IfNeeded`).

The JSON patch (RFC 6902) is built by `json_patch`, which knows that containers and volumes are
lists keyed by name: an absent array is added whole, new items are inserted at their place
(`add .../0` before, `add .../-` after) instead of morphing one container into another, and `/`
in annotation keys is escaped as `~1`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import re2

INJECTOR_VERSION = "1"
PREFIX = "skillwarden.io/"
INJECT_KEY = PREFIX + "inject"
STATUS_KEY = PREFIX + "injected"
DEFAULT_CONTAINER_KEY = "kubectl.kubernetes.io/default-container"

SIDECAR = "skillwarden"
OPA = "opa"
VOLUME_PROVIDER_KEY = "skillwarden-provider-key"
VOLUME_SPOOL = "skillwarden-spool"
VOLUME_TMP = "skillwarden-tmp"
VOLUME_TOKEN = "skillwarden-token"  # noqa: S105 - a volume name
VOLUME_SIGNING_KEY = "skillwarden-signing-key"
OWNED_CONTAINERS = (SIDECAR, OPA)
OWNED_VOLUMES = (VOLUME_PROVIDER_KEY, VOLUME_SPOOL, VOLUME_TMP, VOLUME_TOKEN, VOLUME_SIGNING_KEY)
_SIDECAR_ONLY_VOLUMES = (VOLUME_PROVIDER_KEY, VOLUME_SPOOL, VOLUME_TMP, VOLUME_SIGNING_KEY)

PROVIDER_KEY_DIR = "/var/run/secrets/skillwarden.io/provider"
SPOOL_DIR = "/var/lib/skillwarden/spool"
SIGNING_KEY_DIR = "/var/run/secrets/skillwarden.io/signing"
TOKEN_DIR = "/var/run/secrets/skillwarden.io/serviceaccount"  # noqa: S105 - a path
KUBE_SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
BASE_URL_ENV = "ANTHROPIC_BASE_URL"

# Annotations a user may set, and what they mean (docs/injection.md lists the same table).
ANNOTATIONS: dict[str, str] = {
    INJECT_KEY: 'opt in ("true") or out ("false"); the same key as a label opts in for selectors',
    PREFIX + "native-sidecar": '"true"/"false": inject as native sidecars (initContainers, '
                               'restartPolicy: Always; Kubernetes >= 1.29)',
    PREFIX + "provider-key-secret": "name of the Secret (same namespace) holding the provider key",
    PREFIX + "port": "port of the sidecar's application listener on 127.0.0.1 (ANTHROPIC_BASE_URL)",
    PREFIX + "sidecar-cpu": "CPU request of the skillwarden container",
    PREFIX + "sidecar-memory": "memory request and limit of the skillwarden container",
    PREFIX + "sidecar-cpu-limit": "CPU limit of the skillwarden container (default: none)",
    PREFIX + "opa-cpu": "CPU request of the opa container",
    PREFIX + "opa-memory": "memory request and limit of the opa container",
    PREFIX + "spool-size": "size limit of the record spool emptyDir",
    PREFIX + "spool-medium": '"" (node disk; always allowed) or "Memory" (only where the platform chose it; '
                             'the sidecar\'s memory limit must cover spool-size + 128Mi)',
    STATUS_KEY: "written by the webhook: what was injected (never set it yourself)",
}

# Words that mark an attempt to turn evidence or masking off per pod. Policies decide those.
_REFUSED_WORDS = ("record", "audit", "mask", "spool-disable", "bypass", "skip")

_QUANTITY = r"([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?"
_DNS_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_MAX_ANNOTATION_VALUE = 253
# Where the spool lives: "" is the node's disk, "Memory" a tmpfs (Kubernetes' StorageMedium names).
SPOOL_MEDIA = ("", "Memory")
# The recorder refuses new requests once this share of the spool's sizeLimit is unshipped, and even
# in-flight appends at twice that (its hard bound): 80% leaves room for segment metadata, keys and
# digests, so the sidecar says 503 before the kubelet evicts the pod (disk) or the tmpfs is full.
SPOOL_ADMISSION_SHARE = 0.4
# What the sidecar process needs besides a memory-backed spool: 90 MiB idle, 134 MiB peak at 256
# streams (docs/performance.md); the spool itself never goes past 80% of its sizeLimit.
SPOOL_MEMORY_HEADROOM = 128 * 2**20
_SUFFIX = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
           "n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
           "P": 1e15, "E": 1e18}


class InjectionDenied(ValueError):
    """The pod asked for injection but cannot be injected as asked; the message says what to fix."""


@dataclass(frozen=True)
class Resources:
    cpu: str
    memory: str
    memory_limit: str | None = None  # None: same as the request
    cpu_limit: str | None = None  # None: no CPU limit (throttling adds latency to every call)

    def as_spec(self) -> dict[str, Any]:
        limits: dict[str, str] = {"memory": self.memory_limit or self.memory}
        if self.cpu_limit:
            limits["cpu"] = self.cpu_limit
        return {"requests": {"cpu": self.cpu, "memory": self.memory}, "limits": limits}


@dataclass(frozen=True)
class InjectionSettings:
    """Operator-wide defaults (chart values -> operator env); annotations override some per pod."""

    sidecar_image: str = "ghcr.io/skillwarden/skillwarden:0.1.0"
    opa_image: str = "openpolicyagent/opa:1.22.2-static"
    bundle_service_url: str = "http://skillwarden-operator.skillwarden-system.svc:8080"
    provider_key_secret: str = "anthropic-api-key"  # noqa: S105 - a Secret name
    provider_key_secret_key: str = "api-key"  # noqa: S105 - a key name
    upstream_url: str = "https://api.anthropic.com"
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()
    opa_poll_min_seconds: int = 2
    opa_poll_max_seconds: int = 10
    # Session records: where the sidecar ships them (the bucket's Object Lock is checked at start).
    records_bucket: str = "skillwarden-audit"
    records_prefix: str = ""
    records_retention_days: int = 0  # 0: the sidecar's default; the bucket's default retention must cover it
    s3_endpoint: str = ""  # empty: AWS S3
    s3_region: str = "us-east-1"
    s3_credentials_secret: str = ""  # Secret (same namespace) with AWS_ACCESS_KEY_ID/..., as env
    signing_key_secret: str = ""  # Secret (same namespace) with the Ed25519 record-signing key
    port: int = 8790
    admin_port: int = 9091
    opa_port: int = 8181
    opa_diagnostic_port: int = 8282
    native_sidecar: bool = False
    sidecar_resources: Resources = Resources("100m", "128Mi", "256Mi")
    opa_resources: Resources = Resources("50m", "64Mi", "128Mi")
    spool_size: str = "1Gi"
    spool_medium: str = ""  # "" node disk, "Memory" tmpfs (counts against the sidecar's memory limit)
    token_audience: str = "skillwarden"  # noqa: S105 - an audience
    token_expiration_seconds: int = 3600
    sa_issuer: str = ""  # the cluster's service-account issuer, for tokens apps present
    oidc_issuer: str = ""
    oidc_audience: str = ""
    oidc_jwks_url: str = ""
    run_as_user: int = 65532
    excluded_namespaces: frozenset[str] = frozenset({"kube-system", "kube-public", "kube-node-lease"})
    operator_labels: tuple[tuple[str, str], ...] = (("app.kubernetes.io/name", "skillwarden-operator"),)

    def ports(self) -> dict[str, int]:
        return {"sidecar proxy": self.port, "sidecar admin": self.admin_port,
                "opa": self.opa_port, "opa diagnostics": self.opa_diagnostic_port}


# Environment variables of the operator process -> settings (one table; docs list the same).
ENV_SETTINGS: dict[str, str] = {
    "SKILLWARDEN_INJECT_SIDECAR_IMAGE": "sidecar_image",
    "SKILLWARDEN_INJECT_OPA_IMAGE": "opa_image",
    "SKILLWARDEN_INJECT_BUNDLE_SERVICE_URL": "bundle_service_url",
    "SKILLWARDEN_INJECT_PROVIDER_KEY_SECRET": "provider_key_secret",
    "SKILLWARDEN_INJECT_PROVIDER_KEY_SECRET_KEY": "provider_key_secret_key",
    "SKILLWARDEN_INJECT_S3_ENDPOINT": "s3_endpoint",
    "SKILLWARDEN_INJECT_S3_REGION": "s3_region",
    "SKILLWARDEN_INJECT_S3_CREDENTIALS_SECRET": "s3_credentials_secret",
    "SKILLWARDEN_INJECT_RECORDS_BUCKET": "records_bucket",
    "SKILLWARDEN_INJECT_RECORDS_PREFIX": "records_prefix",
    "SKILLWARDEN_INJECT_RECORDS_RETENTION_DAYS": "records_retention_days",
    "SKILLWARDEN_INJECT_SIGNING_KEY_SECRET": "signing_key_secret",
    "SKILLWARDEN_INJECT_UPSTREAM_URL": "upstream_url",
    "SKILLWARDEN_INJECT_PORT": "port",
    "SKILLWARDEN_INJECT_ADMIN_PORT": "admin_port",
    "SKILLWARDEN_INJECT_OPA_PORT": "opa_port",
    "SKILLWARDEN_INJECT_OPA_DIAGNOSTIC_PORT": "opa_diagnostic_port",
    "SKILLWARDEN_INJECT_NATIVE_SIDECAR": "native_sidecar",
    "SKILLWARDEN_INJECT_SIDECAR_CPU": "sidecar_resources.cpu",
    "SKILLWARDEN_INJECT_SIDECAR_MEMORY": "sidecar_resources.memory",
    "SKILLWARDEN_INJECT_OPA_CPU": "opa_resources.cpu",
    "SKILLWARDEN_INJECT_OPA_MEMORY": "opa_resources.memory",
    "SKILLWARDEN_INJECT_SPOOL_SIZE": "spool_size",
    "SKILLWARDEN_INJECT_SPOOL_MEDIUM": "spool_medium",
    "SKILLWARDEN_INJECT_TOKEN_AUDIENCE": "token_audience",
    "SKILLWARDEN_INJECT_SA_ISSUER": "sa_issuer",
    "SKILLWARDEN_INJECT_OIDC_ISSUER": "oidc_issuer",
    "SKILLWARDEN_INJECT_OIDC_AUDIENCE": "oidc_audience",
    "SKILLWARDEN_INJECT_EXCLUDED_NAMESPACES": "excluded_namespaces",
}


class SettingsError(ValueError):
    """Operator start-up stops with this; the message names the environment variable."""


CONFIG_FILE_ENV = "SKILLWARDEN_INJECTION_CONFIG"


def load_settings(environ: Mapping[str, str]) -> InjectionSettings:
    """The chart's JSON document (file named by SKILLWARDEN_INJECTION_CONFIG), then the
    SKILLWARDEN_INJECT_* variables on top (handy for local runs and `operator.extraEnv`)."""
    base = InjectionSettings()
    path = environ.get(CONFIG_FILE_ENV)
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                document = json.load(handle)
        except (OSError, ValueError) as error:
            raise SettingsError(f"{CONFIG_FILE_ENV}={path}: unreadable ({error})") from None
        try:
            base = settings_from_document(document)
        except (ValueError, TypeError, AttributeError) as error:
            raise SettingsError(f"{CONFIG_FILE_ENV}={path}: {error}") from None
    return settings_from_env(environ, base)


def settings_from_document(document: Mapping[str, Any]) -> InjectionSettings:
    """The chart's `injection.json` (templates/configmap.yaml) -> settings."""
    if not isinstance(document, Mapping):
        raise ValueError("the document must be a JSON object")

    def section(*path: str) -> Mapping[str, Any]:
        node: Any = document
        for key in path:
            node = node.get(key) if isinstance(node, Mapping) else None
        if node is None:
            return {}
        if not isinstance(node, Mapping):
            raise ValueError(f"{'.'.join(path)} must be an object")
        return node

    def text(value: Any, where: str) -> str | None:
        if value is None or value == "":
            return None
        if not isinstance(value, str | int | bool):
            raise ValueError(f"{where} must be a string")
        return str(value).lower() if isinstance(value, bool) else str(value)

    settings = InjectionSettings()
    # setting <- where the chart puts it (the path names the field in error messages)
    fields = {
        "bundle_service_url": ("bundleUrl",), "sidecar_image": ("sidecar", "image"),
        "image_pull_policy": ("sidecar", "imagePullPolicy"), "port": ("sidecar", "port"),
        "admin_port": ("sidecar", "metricsPort"), "native_sidecar": ("sidecar", "nativeSidecar"),
        "token_audience": ("sidecar", "tokenAudience"), "oidc_issuer": ("sidecar", "oidc", "issuer"),
        "oidc_audience": ("sidecar", "oidc", "audience"), "oidc_jwks_url": ("sidecar", "oidc", "jwksUrl"),
        "opa_image": ("opa", "image"), "opa_poll_min_seconds": ("opa", "pollMinSeconds"),
        "opa_poll_max_seconds": ("opa", "pollMaxSeconds"),
        "provider_key_secret": ("providerKey", "secretName"),
        "provider_key_secret_key": ("providerKey", "key"),
        "upstream_url": ("upstream", "baseUrl"), "s3_endpoint": ("recording", "s3", "endpoint"),
        "s3_region": ("recording", "s3", "region"), "records_bucket": ("recording", "s3", "bucket"),
        "records_prefix": ("recording", "s3", "prefix"),
        "s3_credentials_secret": ("recording", "s3", "credentialsSecret"),
        "spool_size": ("recording", "spool", "sizeLimit"),
        "spool_medium": ("recording", "spool", "medium"),
        "signing_key_secret": ("recording", "signingKeySecret"),
    }
    for target, path in fields.items():
        where = ".".join(path)
        raw = text(section(*path[:-1]).get(path[-1]), where)
        if raw is not None:
            try:
                settings = _apply_setting(settings, target, raw, any_port=target.startswith("opa_poll"))
            except ValueError as error:
                raise ValueError(f"{where}: {error}") from None
    for group, where in (("sidecar_resources", "sidecar"), ("opa_resources", "opa")):
        resources = section(where, "resources")
        if resources:
            current: Resources = getattr(settings, group)
            requests, limits = section(where, "resources", "requests"), section(where, "resources", "limits")
            values = {"cpu": requests.get("cpu") or current.cpu,
                      "memory": requests.get("memory") or current.memory,
                      "memory_limit": limits.get("memory"), "cpu_limit": limits.get("cpu")}
            for attribute, value in values.items():
                if value is not None:
                    _quantity(str(value), "cpu" if "cpu" in attribute else "memory")
            built: dict[str, Any] = {k: None if v is None else str(v) for k, v in values.items()}
            changes: dict[str, Any] = {group: Resources(**built)}
            settings = replace(settings, **changes)
    secrets = document.get("imagePullSecrets") or []
    if not isinstance(secrets, list):
        raise ValueError("imagePullSecrets must be a list")
    names = tuple(str(s.get("name") if isinstance(s, Mapping) else s) for s in secrets)
    return replace(settings, image_pull_secrets=names)


def settings_from_env(environ: Mapping[str, str], base: InjectionSettings | None = None) -> InjectionSettings:
    settings = base or InjectionSettings()
    for variable, target in ENV_SETTINGS.items():
        raw = environ.get(variable)
        if raw is None or raw == "":
            continue
        try:
            settings = _apply_setting(settings, target, raw.strip())
        except ValueError as error:
            raise SettingsError(f"{variable}={raw!r}: {error}") from None
    sidecar = settings.sidecar_resources
    problem = memory_spool_problem(settings.spool_medium, settings.spool_size,
                                   sidecar.memory_limit or sidecar.memory)
    if problem:
        raise SettingsError(f"recording.spool.medium=Memory (SKILLWARDEN_INJECT_SPOOL_MEDIUM): {problem}; "
                            "raise sidecar.resources.limits.memory or lower recording.spool.sizeLimit "
                            "(SKILLWARDEN_INJECT_SPOOL_SIZE)")
    return settings


def _apply_setting(settings: InjectionSettings, target: str, raw: str,
                   any_port: bool = False) -> InjectionSettings:
    if target.endswith((".cpu", ".memory")):
        group, attribute = target.split(".")
        _quantity(raw, attribute)
        return replace(settings, **{group: replace(getattr(settings, group), **{attribute: raw})})
    current = getattr(settings, target)
    value: Any
    if isinstance(current, bool):
        value = _boolean(raw)
    elif isinstance(current, int):
        value = _positive(raw) if any_port or target == "records_retention_days" else _port_number(raw)
    elif isinstance(current, frozenset):
        value = frozenset(part.strip() for part in raw.split(",") if part.strip())
    elif target == "spool_size":
        _quantity(raw, "memory")
        value = raw
    elif target == "spool_medium":
        value = _spool_medium(raw)
    else:
        value = raw
    return replace(settings, **{target: value})


def _boolean(raw: str) -> bool:
    lowered = raw.lower()
    if lowered not in {"true", "false"}:
        raise ValueError('must be "true" or "false"')
    return lowered == "true"


def _positive(raw: str) -> int:
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError("must be a whole number >= 1")
    return int(raw)


def _spool_medium(raw: str) -> str:
    if raw not in SPOOL_MEDIA:
        raise ValueError(f'{raw[:64]!r} is not a spool medium: "" (node disk) or "Memory" (tmpfs)')
    return raw


def spool_admission_bytes(spool_size: str) -> int:
    """The recorder's admission bound (--records-spool-max-bytes) for a spool of this sizeLimit."""
    return int(_quantity(spool_size, "memory") * SPOOL_ADMISSION_SHARE)


def memory_spool_problem(medium: str, spool_size: str, memory_limit: str) -> str | None:
    """A tmpfs spool's pages are charged to the sidecar container that writes them: a memory limit
    below spool + process would have the kernel OOM-kill the sidecar instead of the recorder
    refusing requests with a 503."""
    if medium != "Memory":
        return None
    needed = _quantity(spool_size, "memory") + SPOOL_MEMORY_HEADROOM
    if _quantity(memory_limit, "memory") >= needed:
        return None
    return (f"the sidecar's memory limit {memory_limit} does not cover the memory-backed spool "
            f"(sizeLimit {spool_size} + 128Mi for the process = {needed / 2**20:.0f}Mi)")


def _port_number(raw: str) -> int:
    if not raw.isdigit() or not 1024 <= int(raw) <= 65535:
        raise ValueError("must be a port number 1024-65535")
    return int(raw)


def _quantity(raw: str, kind: str) -> float:
    """Kubernetes resource quantity -> number (cores or bytes); re2: the value is user text."""
    match = re2.fullmatch(_QUANTITY, raw) if len(raw) <= 32 else None
    if match is None:
        example = "250m" if kind == "cpu" else "256Mi"
        raise ValueError(f"{raw!r} is not a Kubernetes quantity (e.g. {example})")
    number = float(match.group(1))
    suffix = match.group(3) or ""
    scale = float(10 ** int(suffix[1:])) if suffix[:1] in {"e", "E"} else float(_SUFFIX[suffix])
    value = number * scale
    if value <= 0:
        raise ValueError(f"{raw!r} must be greater than zero")
    if kind == "memory" and value < 16 * 2**20:
        raise ValueError(f"{raw!r} is below the 16Mi the container needs to start")
    return value


@dataclass(frozen=True)
class PodOptions:
    """The per-pod result of settings + validated annotations."""

    native: bool
    provider_key_secret: str
    port: int
    sidecar_resources: Resources
    opa_resources: Resources
    spool_size: str
    spool_medium: str = ""


@dataclass(frozen=True)
class Outcome:
    action: Literal["inject", "unchanged", "skip"]
    reason: str  # machine-friendly, the `reason` label of skillwarden_injections_total
    message: str
    pod: dict[str, Any]  # the pod as it should be stored (== input when not injected)
    patch: list[dict[str, Any]] = field(default_factory=list)


def plan(pod: Mapping[str, Any], namespace: str | None, settings: InjectionSettings) -> Outcome:
    """Decide and compute. Raises `InjectionDenied` for pods that must not be admitted as they are."""
    original = _checked_pod(pod)
    metadata = original.get("metadata") or {}
    labels = _string_map(metadata, "labels")
    annotations = _string_map(metadata, "annotations")
    namespace = namespace or metadata.get("namespace")
    if not isinstance(namespace, str) or not namespace:
        raise InjectionDenied("the pod's namespace is unknown (neither in the admission request nor in "
                              "metadata.namespace)")

    if namespace in settings.excluded_namespaces:
        return _skip(original, "excluded-namespace", f"namespace {namespace} is never injected")
    if settings.operator_labels and all(labels.get(k) == v for k, v in settings.operator_labels):
        return _skip(original, "operator-pod", "the operator's own pods are never injected")

    wanted = [_opt_in(source, values.get(INJECT_KEY)) for source, values in
              (("annotation", annotations), ("label", labels))]
    if False in wanted:
        return _skip(original, "opted-out", f'{INJECT_KEY} is "false"')
    if True not in wanted:
        return _skip(original, "not-opted-in", f'no {INJECT_KEY}: "true" annotation or label')

    options = _options(annotations, settings)
    injected_before = STATUS_KEY in annotations
    _check_pod(original, options, settings, injected_before)

    desired = _inject(_strip_owned(original) if injected_before else copy.deepcopy(original),
                      namespace, options, settings)
    patch = json_patch(original, desired)
    if not patch:
        return Outcome("unchanged", "already-injected", "already injected; nothing to change", desired)
    return Outcome("inject", "injected", "injected skillwarden and opa", desired, patch)


def _skip(pod: dict[str, Any], reason: str, message: str) -> Outcome:
    return Outcome("skip", reason, message, pod)


def _checked_pod(pod: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(pod, Mapping):
        raise InjectionDenied("the admission object is not a Pod object")
    spec = pod.get("spec")
    metadata = pod.get("metadata", {})
    if not isinstance(metadata, Mapping):
        raise InjectionDenied("metadata must be an object")
    if not isinstance(spec, Mapping):
        raise InjectionDenied("the pod has no spec")
    for key in ("containers", "initContainers"):
        containers = spec.get(key, [])
        if containers is None:
            continue
        if not isinstance(containers, list) or not all(
                isinstance(c, Mapping) and isinstance(c.get("name"), str) for c in containers):
            raise InjectionDenied(f"spec.{key} must be a list of containers with names")
        for container in containers:
            for field_name in ("env", "envFrom", "volumeMounts", "ports"):
                items = container.get(field_name)
                if items is not None and not (isinstance(items, list) and all(isinstance(i, Mapping)
                                                                              for i in items)):
                    name = container["name"][:63]
                    raise InjectionDenied(f"spec.{key}[{name!r}].{field_name} must be a list of objects")
    if not spec.get("containers"):
        raise InjectionDenied("the pod has no containers")
    for key in ("volumes",):
        if spec.get(key) is not None and not isinstance(spec.get(key), list):
            raise InjectionDenied(f"spec.{key} must be a list")
    return copy.deepcopy(dict(pod))


def _string_map(metadata: Mapping[str, Any], key: str) -> dict[str, str]:
    values = metadata.get(key) or {}
    if not isinstance(values, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in values.items()):
        raise InjectionDenied(f"metadata.{key} must map strings to strings")
    return dict(values)


def _opt_in(source: str, value: str | None) -> bool | None:
    if value is None:
        return None
    lowered = value.strip().lower()
    if lowered in {"true", "false"}:
        return lowered == "true"
    raise InjectionDenied(f'{source} {INJECT_KEY}: {value[:64]!r} is not "true" or "false"')


def _options(annotations: Mapping[str, str], settings: InjectionSettings) -> PodOptions:
    for key, value in annotations.items():
        if not key.startswith(PREFIX):
            continue
        if key not in ANNOTATIONS:
            name = key[len(PREFIX):]
            if any(word in name.lower() for word in _REFUSED_WORDS):
                raise InjectionDenied(
                    f"annotation {key[:80]} refused: recording and masking cannot be changed per pod; "
                    "they are set by the namespace's SkillPolicy")
            known = ", ".join(sorted(k for k in ANNOTATIONS if k != STATUS_KEY))
            raise InjectionDenied(f"unknown annotation {key[:80]}; known: {known}")
        if len(value) > _MAX_ANNOTATION_VALUE and key != STATUS_KEY:
            raise InjectionDenied(f"annotation {key}: value longer than {_MAX_ANNOTATION_VALUE} characters")

    def get(name: str) -> str | None:
        value = annotations.get(PREFIX + name)
        return value.strip() if value is not None else None

    def quantity(name: str, kind: str, default: str | None) -> str | None:
        raw = get(name)
        if raw is None:
            return default
        try:
            _quantity(raw, kind)
        except ValueError as error:
            raise InjectionDenied(f"annotation {PREFIX}{name}: {error}") from None
        return raw

    native = settings.native_sidecar
    if (raw := get("native-sidecar")) is not None:
        try:
            native = _boolean(raw)
        except ValueError as error:
            raise InjectionDenied(f"annotation {PREFIX}native-sidecar: {raw[:64]!r} {error}") from None
    secret = get("provider-key-secret") or settings.provider_key_secret
    if len(secret) > 253 or re2.fullmatch(_DNS_SUBDOMAIN, secret) is None:
        raise InjectionDenied(f"annotation {PREFIX}provider-key-secret: {secret[:64]!r} is not a valid "
                              "Secret name (lowercase RFC 1123 subdomain)")
    port = settings.port
    if (raw := get("port")) is not None:
        try:
            port = _port_number(raw)
        except ValueError as error:
            raise InjectionDenied(f"annotation {PREFIX}port: {raw[:64]!r} {error}") from None
    def memory(name: str, default: Resources) -> tuple[str, str | None]:
        # The annotation sets request and limit together: a pod owner asking for more memory
        # wants it guaranteed, not just scheduled.
        raw = quantity(name, "memory", None)
        return (raw, raw) if raw else (default.memory, default.memory_limit)

    sidecar_memory = memory("sidecar-memory", settings.sidecar_resources)
    sidecar = Resources(
        cpu=quantity("sidecar-cpu", "cpu", settings.sidecar_resources.cpu) or "",
        memory=sidecar_memory[0], memory_limit=sidecar_memory[1],
        cpu_limit=quantity("sidecar-cpu-limit", "cpu", settings.sidecar_resources.cpu_limit))
    if sidecar.cpu_limit and _quantity(sidecar.cpu_limit, "cpu") < _quantity(sidecar.cpu, "cpu"):
        raise InjectionDenied(f"annotation {PREFIX}sidecar-cpu-limit: {sidecar.cpu_limit} is below the "
                              f"CPU request {sidecar.cpu}")
    opa_memory = memory("opa-memory", settings.opa_resources)
    opa = Resources(cpu=quantity("opa-cpu", "cpu", settings.opa_resources.cpu) or "",
                    memory=opa_memory[0], memory_limit=opa_memory[1],
                    cpu_limit=settings.opa_resources.cpu_limit)
    spool = quantity("spool-size", "memory", settings.spool_size) or settings.spool_size
    medium = settings.spool_medium
    if (raw := annotations.get(PREFIX + "spool-medium")) is not None:
        try:
            medium = _spool_medium(raw.strip())
        except ValueError as error:
            raise InjectionDenied(f"annotation {PREFIX}spool-medium: {error}") from None
        if medium and medium != settings.spool_medium:
            # A memory spool loses what is not yet shipped with the node: evidence durability is
            # the platform's call (chart recording.spool.medium), a pod may only keep the disk.
            raise InjectionDenied(
                f"annotation {PREFIX}spool-medium: {medium!r} is not allowed here: a memory-backed "
                "spool loses unshipped records with the node, so only the platform setting "
                "(chart recording.spool.medium) can choose it; a pod may ask for \"\" (node disk)")
    problem = memory_spool_problem(medium, spool, sidecar.memory_limit or sidecar.memory)
    if problem:
        raise InjectionDenied(f"spool medium Memory: {problem}; raise {PREFIX}sidecar-memory or lower "
                              f"{PREFIX}spool-size")
    return PodOptions(native=native, provider_key_secret=secret, port=port, sidecar_resources=sidecar,
                      opa_resources=opa, spool_size=spool, spool_medium=medium)


def _user_containers(spec: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or []:
            if container.get("name") not in OWNED_CONTAINERS:
                found.append((key, container))
    return found


def _check_pod(pod: dict[str, Any], options: PodOptions, settings: InjectionSettings,
               injected_before: bool) -> None:
    spec = pod["spec"]
    if not injected_before:
        for key in ("initContainers", "containers"):
            for container in spec.get(key) or []:
                if container["name"] in OWNED_CONTAINERS:
                    raise InjectionDenied(f"spec.{key}: container name {container['name']!r} is reserved for "
                                          "the injected sidecar; rename the container")
        for volume in spec.get("volumes") or []:
            if isinstance(volume, Mapping) and volume.get("name") in OWNED_VOLUMES:
                raise InjectionDenied(f"spec.volumes: volume name {volume['name']!r} is reserved for the "
                                      "injected sidecar; rename the volume")

    for shared in ("shareProcessNamespace", "hostPID"):
        if spec.get(shared) is True:
            # A shared PID namespace lets an app container running as the sidecar's user read the
            # provider key through /proc/<sidecar>/root and /proc/<sidecar>/environ.
            raise InjectionDenied(f"spec.{shared}: true would let the app containers read the sidecar's "
                                  "provider key through /proc; not allowed for a governed pod")
    if spec.get("hostNetwork") is True:
        # The sidecar's and OPA's loopback listeners would be the node's: any process there could
        # call Claude as this workload, and the fixed ports would collide between pods.
        raise InjectionDenied("spec.hostNetwork: true would put the sidecar's 127.0.0.1 listener on the "
                              "node, usable by every process there; not allowed for a governed pod")
    ports = {**settings.ports(), "sidecar proxy": options.port}
    if len(set(ports.values())) != len(ports):
        used = ", ".join(f"{k} {v}" for k, v in settings.ports().items())
        raise InjectionDenied(f"annotation {PREFIX}port: {options.port} collides with a port the injected "
                              f"containers use ({used})")
    taken = {port: what for what, port in ports.items()}
    for key, container in _user_containers(spec):
        for entry in container.get("ports") or []:
            number = entry.get("containerPort") if isinstance(entry, Mapping) else None
            if number in taken:
                hint = f"; choose another with {PREFIX}port" if taken[number] == "sidecar proxy" else ""
                raise InjectionDenied(f"port conflict: container {container['name']!r} ({key}) declares port "
                                      f"{number}, which the injected {taken[number]} listens on{hint}")
        _check_no_provider_key(key, container, options.provider_key_secret)

    for volume in spec.get("volumes") or []:
        if not isinstance(volume, Mapping) or volume.get("name") in OWNED_VOLUMES:
            continue
        if _volume_secrets(volume) & {options.provider_key_secret}:
            raise InjectionDenied(f"volume {volume.get('name')!r} mounts the provider-key Secret "
                                  f"{options.provider_key_secret!r}; only the skillwarden sidecar may "
                                  "read it")


def _check_no_provider_key(key: str, container: Mapping[str, Any], secret: str) -> None:
    name = container["name"]
    for env in container.get("env") or []:
        ref = ((env.get("valueFrom") or {}).get("secretKeyRef") or {}) if isinstance(env, Mapping) else {}
        if ref.get("name") == secret:
            raise InjectionDenied(f"container {name!r} ({key}) reads the provider-key Secret {secret!r} "
                                  f"into env {env.get('name')!r}; only the skillwarden sidecar may read it")
    for source in container.get("envFrom") or []:
        if isinstance(source, Mapping) and (source.get("secretRef") or {}).get("name") == secret:
            raise InjectionDenied(f"container {name!r} ({key}) imports the provider-key Secret {secret!r} "
                                  "with envFrom; only the skillwarden sidecar may read it")
    for mount in container.get("volumeMounts") or []:
        if isinstance(mount, Mapping) and mount.get("name") in _SIDECAR_ONLY_VOLUMES:
            raise InjectionDenied(f"container {name!r} ({key}) mounts {mount.get('name')!r}, a volume "
                                  "owned by the injected sidecar")


def _volume_secrets(volume: Mapping[str, Any]) -> set[str]:
    names = set()
    if isinstance(volume.get("secret"), Mapping):
        names.add(volume["secret"].get("secretName"))
    for source in (volume.get("projected") or {}).get("sources") or []:
        if isinstance(source, Mapping) and isinstance(source.get("secret"), Mapping):
            names.add(source["secret"].get("name"))
    return {n for n in names if isinstance(n, str)}


def _strip_owned(pod: dict[str, Any]) -> dict[str, Any]:
    """An injected pod minus every webhook-owned part; user parts we added to stay (they are user's)."""
    stripped = copy.deepcopy(pod)
    spec = stripped["spec"]
    for key, owned in (("initContainers", OWNED_CONTAINERS), ("containers", OWNED_CONTAINERS),
                       ("volumes", OWNED_VOLUMES)):
        items = spec.get(key)
        if not items:
            continue
        kept = [i for i in items if not (isinstance(i, Mapping) and i.get("name") in owned)]
        if len(kept) == len(items):
            continue
        # An array that only existed because we added it goes away whole, as it came.
        if kept or key == "containers":
            spec[key] = kept
        else:
            del spec[key]
    return stripped


def _security_context(settings: InjectionSettings) -> dict[str, Any]:
    return {
        "runAsNonRoot": True, "runAsUser": settings.run_as_user, "runAsGroup": settings.run_as_user,
        "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False, "privileged": False,
        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
    }


def _kube_sa_mount(spec: Mapping[str, Any]) -> dict[str, Any] | None:
    """The API server's token mount of the app (added by the ServiceAccount admission plugin before
    webhooks run), reused so the sidecar can create SkillApprovals and fetch the issuer's JWKS."""
    for _, container in _user_containers(spec):
        for mount in container.get("volumeMounts") or []:
            if isinstance(mount, Mapping) and mount.get("mountPath") == KUBE_SA_DIR:
                return {"name": mount.get("name"), "mountPath": KUBE_SA_DIR, "readOnly": True}
    return None


def sidecar_container(namespace: str, options: PodOptions, settings: InjectionSettings,
                      kube_sa_mount: dict[str, Any] | None) -> dict[str, Any]:
    args = [
        "--listen-host=127.0.0.1", f"--port={options.port}",
        "--admin-host=0.0.0.0", f"--admin-port={settings.admin_port}",
        f"--opa-url=http://127.0.0.1:{settings.opa_port}",
        f"--upstream-url={settings.upstream_url}",
        f"--provider-key-file={PROVIDER_KEY_DIR}/{settings.provider_key_secret_key}",
        f"--sa-audience={settings.token_audience}",
        # Derived from the spool's sizeLimit (the sidecar's own default, 512 MiB, knows no volume).
        f"--records-spool-max-bytes={spool_admission_bytes(options.spool_size)}",
    ]
    if settings.sa_issuer:
        args.append(f"--sa-issuer={settings.sa_issuer}")
        if kube_sa_mount is not None:
            args += [f"--jwks-ca-file={KUBE_SA_DIR}/ca.crt", f"--jwks-token-file={KUBE_SA_DIR}/token"]
    if settings.oidc_issuer:
        args += [f"--oidc-issuer={settings.oidc_issuer}", f"--oidc-audience={settings.oidc_audience}"]
        if settings.oidc_jwks_url:
            args.append(f"--oidc-jwks-url={settings.oidc_jwks_url}")

    def field_ref(name: str, path: str) -> dict[str, Any]:
        return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}

    # Identity from the downward API, never from anything the app controls. The recorder reads
    # POD_NAME/POD_NAMESPACE and the AWS_* / SKILLWARDEN_RECORDS_* variables.
    env = [
        field_ref("SKILLWARDEN_NAMESPACE", "metadata.namespace"),
        field_ref("SKILLWARDEN_POD_NAME", "metadata.name"),
        field_ref("SKILLWARDEN_SERVICE_ACCOUNT", "spec.serviceAccountName"),
        field_ref("POD_NAMESPACE", "metadata.namespace"),
        field_ref("POD_NAME", "metadata.name"),
        {"name": "SKILLWARDEN_SPOOL_DIR", "value": SPOOL_DIR},
        {"name": "SKILLWARDEN_RECORDS_BUCKET", "value": settings.records_bucket},
        {"name": "AWS_REGION", "value": settings.s3_region},
    ]
    # The API server drops empty values (`value: ""` is stored as no value): never emit one, or
    # a re-invocation would see a difference that is not there.
    if settings.records_prefix:
        env.append({"name": "SKILLWARDEN_RECORDS_PREFIX", "value": settings.records_prefix})
    if settings.records_retention_days:
        env.append({"name": "SKILLWARDEN_RECORDS_RETENTION_DAYS",
                    "value": str(settings.records_retention_days)})
    if settings.s3_endpoint:
        env.append({"name": "AWS_ENDPOINT_URL_S3", "value": settings.s3_endpoint})
    mounts = [
        {"name": VOLUME_PROVIDER_KEY, "mountPath": PROVIDER_KEY_DIR, "readOnly": True},
        {"name": VOLUME_SPOOL, "mountPath": SPOOL_DIR},
        {"name": VOLUME_TMP, "mountPath": "/tmp"},  # noqa: S108 - the container's own emptyDir
    ]
    if settings.signing_key_secret:
        mounts.append({"name": VOLUME_SIGNING_KEY, "mountPath": SIGNING_KEY_DIR, "readOnly": True})
        # The recording hook's own variable (sidecar/skillwarden_sidecar/recording/sidecar_hook.py).
        env.append({"name": "SKILLWARDEN_RECORDS_SIGNING_KEY_FILE",
                    "value": f"{SIGNING_KEY_DIR}/signing-key.pem"})
    if kube_sa_mount is not None:
        mounts.append(kube_sa_mount)
    probe = {"httpGet": {"path": "/readyz", "port": settings.admin_port}, "periodSeconds": 2,
             "timeoutSeconds": 1, "failureThreshold": 3}
    container: dict[str, Any] = {
        "name": SIDECAR, "image": settings.sidecar_image, "imagePullPolicy": settings.image_pull_policy,
        "command": ["skillwarden", "sidecar"], "args": args, "env": env,
        "ports": [{"name": "skw-metrics", "containerPort": settings.admin_port, "protocol": "TCP"}],
        "readinessProbe": probe,
        "livenessProbe": {**probe, "httpGet": {"path": "/healthz", "port": settings.admin_port},
                          "periodSeconds": 10},
        "resources": options.sidecar_resources.as_spec(),
        "securityContext": _security_context(settings),
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if settings.s3_credentials_secret:
        container["envFrom"] = [{"secretRef": {"name": settings.s3_credentials_secret}}]
    if options.native:
        # Native sidecar: later containers start only once this probe passed, so the app never
        # sees a connection refused on its first call.
        container["restartPolicy"] = "Always"
        container["startupProbe"] = {**probe, "periodSeconds": 1, "failureThreshold": 120}
    return container


def opa_container(namespace: str, options: PodOptions, settings: InjectionSettings) -> dict[str, Any]:
    # Configuration as --set flags: nothing to keep in sync in a ConfigMap, no write on admission,
    # and the whole configuration is visible in the stored pod (what the kubelet emulator runs).
    service = settings.bundle_service_url.rstrip("/")
    args = [
        "run", "--server", f"--addr=127.0.0.1:{settings.opa_port}",
        f"--diagnostic-addr=0.0.0.0:{settings.opa_diagnostic_port}",
        "--log-level=error", "--log-format=json",
        f"--set=services.skillwarden.url={service}",
        "--set=bundles.skillwarden.service=skillwarden",
        f"--set=bundles.skillwarden.resource=bundles/{namespace}.tar.gz",
        f"--set=bundles.skillwarden.polling.min_delay_seconds={settings.opa_poll_min_seconds}",
        f"--set=bundles.skillwarden.polling.max_delay_seconds={settings.opa_poll_max_seconds}",
        "--set=bundles.skillwarden.polling.long_polling_timeout_seconds=30",
        "--set=decision_logs.console=false",
    ]
    probe = {"httpGet": {"path": "/health?bundles", "port": settings.opa_diagnostic_port},
             "periodSeconds": 2, "timeoutSeconds": 1, "failureThreshold": 3}
    container: dict[str, Any] = {
        "name": OPA, "image": settings.opa_image, "imagePullPolicy": settings.image_pull_policy,
        "args": args,
        "ports": [{"name": "opa-diag", "containerPort": settings.opa_diagnostic_port, "protocol": "TCP"}],
        "readinessProbe": probe,
        "livenessProbe": {**probe, "httpGet": {"path": "/health", "port": settings.opa_diagnostic_port},
                          "periodSeconds": 10},
        "resources": options.opa_resources.as_spec(),
        "securityContext": _security_context(settings),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if options.native:
        container["restartPolicy"] = "Always"
        container["startupProbe"] = {**probe, "periodSeconds": 1, "failureThreshold": 120}
    return container


def volumes(options: PodOptions, settings: InjectionSettings,
            with_token: bool = True) -> list[dict[str, Any]]:
    source = {"serviceAccountToken": {"audience": settings.token_audience, "path": "token",
                                      "expirationSeconds": settings.token_expiration_seconds}}
    token = [{"name": VOLUME_TOKEN, "projected": {"defaultMode": 0o444, "sources": [source]}}]
    if not with_token:
        token = []
    # The API server drops `medium: ""`, so the disk spool carries no medium key (idempotence).
    spool = {"medium": options.spool_medium} if options.spool_medium else {}
    spool["sizeLimit"] = options.spool_size
    return [
        {"name": VOLUME_PROVIDER_KEY, "secret": {
            "secretName": options.provider_key_secret, "defaultMode": 0o444,
            "items": [{"key": settings.provider_key_secret_key, "path": settings.provider_key_secret_key}]}},
        {"name": VOLUME_SPOOL, "emptyDir": spool},
        {"name": VOLUME_TMP, "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
        *token,
    ] + ([{"name": VOLUME_SIGNING_KEY,
           "secret": {"secretName": settings.signing_key_secret, "defaultMode": 0o444}}]
         if settings.signing_key_secret else [])


def _inject(pod: dict[str, Any], namespace: str, options: PodOptions,
            settings: InjectionSettings) -> dict[str, Any]:
    spec = pod["spec"]
    sidecar = sidecar_container(namespace, options, settings, _kube_sa_mount(spec))
    opa = opa_container(namespace, options, settings)
    app_names = [c["name"] for c in spec["containers"]]
    base_url = f"http://127.0.0.1:{options.port}"
    env_added = []
    # The API server refuses a projected service-account token without serviceAccountName; it is
    # only absent when the ServiceAccount admission plugin is off (it runs before webhooks).
    with_token = bool(spec.get("serviceAccountName") or spec.get("serviceAccount"))
    targets = list(spec["containers"]) + (list(spec.get("initContainers") or []) if options.native else [])
    for container in targets:
        env = container.get("env")
        if env is None:
            env = container["env"] = []
        if not any(isinstance(e, Mapping) and e.get("name") == BASE_URL_ENV for e in env):
            env.append({"name": BASE_URL_ENV, "value": base_url})
            env_added.append(container["name"])
        mounts = container.get("volumeMounts")
        if mounts is None:
            mounts = container["volumeMounts"] = []
        has_token = any(isinstance(m, Mapping) and m.get("name") == VOLUME_TOKEN for m in mounts)
        if with_token and not has_token:
            mounts.append({"name": VOLUME_TOKEN, "mountPath": TOKEN_DIR, "readOnly": True})

    if options.native:
        # OPA first: the sidecar's readiness needs a decision point; user init containers after
        # both, so they can already call Claude through the sidecar.
        spec["initContainers"] = [opa, sidecar, *(spec.get("initContainers") or [])]
    else:
        spec["containers"] = [*spec["containers"], sidecar, opa]
    added_volumes = volumes(options, settings, with_token)
    spec["volumes"] = [*(spec.get("volumes") or []), *added_volumes]
    pull = spec.get("imagePullSecrets") or []
    missing = [{"name": n} for n in settings.image_pull_secrets
               if not any(isinstance(p, Mapping) and p.get("name") == n for p in pull)]
    if missing:  # pull secrets are pod-wide; only ever added, never owned
        spec["imagePullSecrets"] = [*pull, *missing]

    metadata = pod.setdefault("metadata", {})
    annotations = metadata.get("annotations")
    if annotations is None:
        annotations = metadata["annotations"] = {}
    annotations.setdefault(DEFAULT_CONTAINER_KEY, app_names[0])
    previous = _previous_status(annotations.get(STATUS_KEY))
    status = {
        "version": INJECTOR_VERSION,
        "mode": "native" if options.native else "sidecar",
        "containers": [SIDECAR, OPA],
        "volumes": [v["name"] for v in added_volumes],
        # Containers that got ANTHROPIC_BASE_URL from us, over every pass (kept on re-invocation).
        "env": sorted(set(previous.get("env", [])) | set(env_added)),
    }
    annotations[STATUS_KEY] = json.dumps(status, sort_keys=True, separators=(",", ":"))
    return pod


def _previous_status(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        loaded = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(loaded, dict) or not isinstance(loaded.get("env", []), list):
        return {}
    return {"env": [e for e in loaded.get("env", []) if isinstance(e, str)]}


def escape_pointer(key: str) -> str:
    """RFC 6901: `~` -> `~0`, `/` -> `~1` (annotation keys like skillwarden.io/injected)."""
    return key.replace("~", "~0").replace("/", "~1")


def json_patch(original: Any, desired: Any) -> list[dict[str, Any]]:
    """RFC 6902 operations turning `original` into `desired` (see the module docstring)."""
    ops: list[dict[str, Any]] = []
    _diff(original, desired, "", ops)
    return ops


def _names(items: list[Any]) -> list[str] | None:
    names = [i.get("name") for i in items if isinstance(i, Mapping)]
    strings = [n for n in names if isinstance(n, str)]
    if len(strings) != len(items) or len(set(strings)) != len(strings):
        return None
    return strings


def _diff(old: Any, new: Any, path: str, ops: list[dict[str, Any]]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in old:
            if key not in new:
                ops.append({"op": "remove", "path": f"{path}/{escape_pointer(key)}"})
        for key, value in new.items():
            child = f"{path}/{escape_pointer(key)}"
            if key not in old:
                ops.append({"op": "add", "path": child, "value": value})
            else:
                _diff(old[key], value, child, ops)
        return
    if isinstance(old, list) and isinstance(new, list):
        _diff_list(old, new, path, ops)
        return
    if type(old) is not type(new) or old != new:
        ops.append({"op": "replace", "path": path, "value": new})


def _diff_list(old: list[Any], new: list[Any], path: str, ops: list[dict[str, Any]]) -> None:
    if old == new:
        return
    old_names, new_names = _names(old), _names(new)

    def same(i: int, j: int) -> bool:  # containers and volumes are matched by name, others by value
        if old_names is not None and new_names is not None:
            return old_names[i] == new_names[j]
        return bool(old[i] == new[j])

    extra = len(new) - len(old)
    if extra >= 0 and all(same(i, i) for i in range(len(old))):  # appended (or edited in place)
        for i in range(len(old)):
            _diff(old[i], new[i], f"{path}/{i}", ops)
        ops.extend({"op": "add", "path": f"{path}/-", "value": item} for item in new[len(old):])
        return
    if extra > 0 and all(same(i, i + extra) for i in range(len(old))):  # prepended
        ops.extend({"op": "add", "path": f"{path}/{i}", "value": new[i]} for i in range(extra))
        for i in range(len(old)):
            _diff(old[i], new[i + extra], f"{path}/{i + extra}", ops)
        return
    ops.append({"op": "replace", "path": path, "value": new})
