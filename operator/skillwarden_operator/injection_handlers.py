"""kopf wiring of the sidecar injector: `POST /skillwarden-inject` (the handler id is the path).

The decision and the patch come from the pure `injection.plan`; this module only adds what needs
the operator: settings loaded once at start-up, the request's namespace (passed in by
`webhook_certs.WebhookServer`, because a Deployment's pods carry none in the object), Events,
the injections counter, and the mapping of outcomes to admission answers:

- injected / unchanged / skipped -> allowed (skips of opted-in pods come with a warning);
- `InjectionDenied` -> denied, HTTP 400, the message names what to fix;
- anything unexpected -> denied, HTTP 500 (failurePolicy would refuse the pod anyway; this way
  the user sees why), logged with the traceback — fail closed, never silently un-injected.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import datetime as dt
import logging
import os
import socket
import tempfile
from collections.abc import Mapping, MutableSequence
from pathlib import Path
from typing import Any

import kopf

from skillwarden_operator import injection, webhook_certs
from skillwarden_operator.webhook_certs import NAMESPACE_HEADER

HANDLER_ID = "skillwarden-inject"
SETTINGS_MEMO_KEY = "skillwarden_injection_settings"
EVENTS_MEMO_KEY = "skillwarden_injection_events"
log = logging.getLogger("skillwarden.injection")


def install(args: argparse.Namespace | None, settings: kopf.OperatorSettings, memo: kopf.Memo) -> None:
    """Called by `skillwarden_operator.main` before kopf starts (see HANDLER_MODULES there)."""
    try:
        memo[SETTINGS_MEMO_KEY] = injection.load_settings(os.environ)
    except injection.SettingsError as error:
        raise SystemExit(f"skillwarden operator: invalid injection settings: {error}") from None
    try:
        memo[EVENTS_MEMO_KEY] = EventPoster(_api_client())
    except Exception as error:  # no API credentials here: inject anyway, without Events
        log.warning("injection events disabled: no Kubernetes API client (%s)", error)
    settings.admission.server = guarded_server(settings.admission.server, os.environ)


def _api_client() -> Any:
    """In-cluster service account, else $KUBECONFIG (as kubectl)."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        return client.ApiClient()
    except config.ConfigException:
        return config.new_client_from_config()  # type: ignore[no-untyped-call]


def guarded_server(server: Any, environ: Mapping[str, str]) -> Any:
    """Put the AdmissionReview guard in front of the configured server; in the chart's
    `certificates.mode=secret`, serve the shared Secret's certificate and keep it rotated."""
    if server is None or isinstance(server, webhook_certs.GuardedServer):
        return server
    rotator = None
    if environ.get("SKILLWARDEN_CERT_MODE") == "secret" and isinstance(server, kopf.WebhookServer):
        api = _api_client()
        directory = Path(tempfile.mkdtemp(prefix="skillwarden-webhook-tls-"))
        rotator = webhook_certs.rotator_from_env(environ, api, directory)
        rotator.reconcile()  # the files must exist before kopf's server loads them
        server = kopf.WebhookServer(addr=server.addr, port=server.port, host=server.host,
                                    certfile=str(rotator.certfile), pkeyfile=str(rotator.pkeyfile),
                                    cafile=str(rotator.cafile), file_check_interval=10)
    return webhook_certs.GuardedServer(server, rotator=rotator)


def _settings(memo: Mapping[str, Any]) -> injection.InjectionSettings:
    settings = memo.get(SETTINGS_MEMO_KEY)
    if isinstance(settings, injection.InjectionSettings):
        return settings
    return injection.load_settings(os.environ)  # registered without install() (a bare `kopf run`)


def _namespace_without_policies(memo: Mapping[str, Any], namespace: str | None) -> bool:
    """True only when this replica has listed every namespace's policies and this one has none."""
    store = getattr(memo.get("state"), "store", None)
    if store is None or namespace is None or getattr(store, "expected", None) is None:
        return False
    return store.get(namespace) is None and namespace not in store.expected


def _count(memo: Mapping[str, Any], namespace: str | None, result: str, reason: str) -> None:
    """`skillwarden_injections_total{namespace,result,reason}` on the operator's metrics."""
    metrics = getattr(memo.get("state"), "metrics", None)
    counter = getattr(metrics, "injections", None)
    if counter is not None:
        counter.labels(namespace=namespace or "", result=result, reason=reason).inc()


def _event_target(body: Mapping[str, Any], namespace: str | None) -> dict[str, Any] | None:
    """Pods being created do not exist yet: report on the controller (ReplicaSet, Job...) that the
    user will `kubectl describe`, or on the named pod."""
    metadata = body.get("metadata") or {}
    for owner in metadata.get("ownerReferences") or []:
        if isinstance(owner, Mapping) and owner.get("controller") and owner.get("name"):
            return {"apiVersion": owner.get("apiVersion"), "kind": owner.get("kind"),
                    "metadata": {"name": owner["name"], "uid": owner.get("uid"), "namespace": namespace}}
    if metadata.get("name") and namespace:
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": metadata["name"], "namespace": namespace}}
    return None


class EventPoster:
    """Kubernetes Events for admission outcomes. kopf's `kopf.event` needs the per-object queue of
    its watchers, which admission handlers do not have; so events are posted here, in a worker
    thread, after the answer went back (they never delay admission; a failure is only logged)."""

    def __init__(self, api: Any, component: str = "skillwarden-injector") -> None:
        self.api = api
        self.component = component
        self.instance = socket.gethostname()
        self._tasks: set[asyncio.Task[None]] = set()

    def post(self, target: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
        work = asyncio.to_thread(self._create, target, kind, reason, message)
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _create(self, target: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
        from kubernetes import client as k8s

        metadata = target["metadata"]
        now = dt.datetime.now(dt.UTC)
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{metadata['name']}.", "namespace": metadata["namespace"]},
            "involvedObject": {"apiVersion": target.get("apiVersion"), "kind": target.get("kind"),
                               "name": metadata["name"], "namespace": metadata["namespace"],
                               **({"uid": metadata["uid"]} if metadata.get("uid") else {})},
            "type": kind, "reason": reason, "message": message[:1000], "count": 1,
            "firstTimestamp": now.isoformat(), "lastTimestamp": now.isoformat(),
            "source": {"component": self.component},
            "reportingComponent": f"skillwarden.io/{self.component}",
            "reportingInstance": self.instance[:128],
        }
        try:
            core: Any = k8s.CoreV1Api(self.api)
            core.create_namespaced_event(metadata["namespace"], body)
        except Exception as error:  # events are best effort; admission already answered
            log.warning("event %s for %s/%s not posted: %s", reason, metadata["namespace"],
                        metadata["name"], error)


def _post_event(memo: Mapping[str, Any], body: Mapping[str, Any], namespace: str | None, kind: str,
                reason: str, message: str) -> None:
    poster = memo.get(EVENTS_MEMO_KEY)
    target = _event_target(body, namespace)
    if poster is not None and target is not None:  # an EventPoster (or a test double)
        poster.post(target, kind, reason, message)


# The label filter doubles as the objectSelector kopf writes in managed (dev) mode: without it every
# pod CREATE in the cluster would go through this webhook, and with failurePolicy Fail a stopped
# operator would block all pod creation. Not persistent: managed mode removes it on exit.
@kopf.on.mutate("pods", operations=["CREATE"], id=HANDLER_ID, side_effects=False, persistent=False,
                labels={injection.INJECT_KEY: "true"})
async def inject_pod(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, headers: Mapping[str, str],
                     dryrun: bool, warnings: MutableSequence[str], logger: Any, **_: Any) -> None:
    pod = dict(body)
    namespace = headers.get(NAMESPACE_HEADER) or (pod.get("metadata") or {}).get("namespace")
    try:
        outcome = injection.plan(pod, namespace, _settings(memo))
    except injection.InjectionDenied as denied:
        _count(memo, namespace, "denied", "invalid")
        if not dryrun:
            _post_event(memo, pod, namespace, "Warning", "SkillwardenInjectionDenied", str(denied))
        raise kopf.AdmissionError(f"skillwarden: {denied}", code=400) from None
    except Exception as error:  # fail closed, with a reason the user can report
        logger.exception("injection failed")
        _count(memo, namespace, "failed", "error")
        raise kopf.AdmissionError(f"skillwarden: injection failed ({type(error).__name__}); "
                                  "see the operator log", code=500) from None

    result = {"inject": "injected", "unchanged": "unchanged", "skip": "skipped"}[outcome.action]
    _count(memo, namespace, result, outcome.reason)
    if outcome.action == "skip":
        if outcome.reason in {"excluded-namespace", "operator-pod"}:
            warnings.append(f"skillwarden: not injected: {outcome.message}")
        return
    if outcome.action == "unchanged":
        return

    desired, ops = outcome.pod, outcome.patch
    if _namespace_without_policies(memo, namespace):
        warnings.append(f"skillwarden: namespace {namespace} has no SkillPolicy yet; the sidecar denies "
                        "every call (default deny) until one is applied")

    def become_injected(raw: Any) -> None:
        raw.clear()
        raw.update(copy.deepcopy(desired))

    patch.fns.append(become_injected)
    # kopf would re-derive the operations by diffing bodies, which morphs one list item into
    # another; send the operations the golden tests check instead.
    setattr(patch, "as_json_patch", lambda body=None: copy.deepcopy(ops))  # noqa: B010
    if not dryrun:
        _post_event(memo, pod, namespace, "Normal", "SkillwardenInjected",
                    f"injected skillwarden sidecar and opa ({len(ops)} patch operations)")
