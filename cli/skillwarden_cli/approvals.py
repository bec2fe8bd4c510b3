"""`skillwarden approvals list | show | approve | deny` (also `kubectl skillwarden approvals ...`).

A review is `{decision, reason}` appended to `status.reviews` of a SkillApproval through the
status subresource, as the user of your kubeconfig. The admission webhook fills in who you are
(from the API server's authentication, never from this command) and refuses what the rules
forbid; its message is printed as is. Exit codes: 0 done, 1 refused or failed, 2 usage.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any

from skillwarden_operator import approvals_model as model

_CONFLICT_RETRIES = 3


def configure(parser: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's)")
    common.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    common.add_argument("--context", help="kubeconfig context")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", parents=[common], help="approvals and their state")
    listing.add_argument("-A", "--all-namespaces", action="store_true")
    listing.add_argument("--state", choices=model.STATES, help="only approvals in this state")
    listing.add_argument("-o", "--format", choices=("table", "json"), default="table")
    show = actions.add_parser("show", parents=[common], help="one approval: request summary and reviews")
    show.add_argument("name")
    show.add_argument("-o", "--format", choices=("text", "json"), default="text")
    for verb, help_text in (("approve", "approve a pending request"), ("deny", "deny a pending request")):
        review = actions.add_parser(verb, parents=[common], help=help_text)
        review.add_argument("name")
        review.add_argument("--reason", required=True, help="why (mandatory; kept in the audit record)")


def _api(args: argparse.Namespace) -> tuple[Any, str]:
    from kubernetes import client
    from kubernetes import config as kube_config

    config: Any = kube_config  # partly untyped
    config.load_kube_config(config_file=args.kubeconfig, context=args.context)
    namespace = args.namespace
    if not namespace:
        _, active = config.list_kube_config_contexts(config_file=args.kubeconfig)
        if args.context:
            contexts, _ = config.list_kube_config_contexts(config_file=args.kubeconfig)
            active = next((c for c in contexts if c["name"] == args.context), active)
        namespace = (active or {}).get("context", {}).get("namespace") or "default"
    return client.CustomObjectsApi(), namespace


def _api_message(error: Any) -> str:
    try:
        return str(json.loads(error.body).get("message") or error.reason)
    except (ValueError, TypeError, AttributeError):
        return str(getattr(error, "reason", error))


def _age(obj: dict[str, Any], now: dt.datetime) -> str:
    try:
        created = model.parse_time((obj.get("metadata") or {}).get("creationTimestamp"))
    except model.ApprovalRuleError:
        return "?"
    seconds = int((now - created).total_seconds())
    return (
        f"{seconds}s" if seconds < 120 else f"{seconds // 60}m" if seconds < 7200 else f"{seconds // 3600}h"
    )


def _row(obj: dict[str, Any], now: dt.datetime, with_namespace: bool) -> list[str]:
    spec, meta = model.spec_of(obj), obj.get("metadata") or {}
    identity = (spec.get("requester") or {}).get("identity") or {}
    row = [
        str(meta.get("name")),
        model.effective_state(obj, now),
        str(identity.get("sub", "?")),
        str(spec.get("rule") or "-"),
        str((spec.get("request") or {}).get("skillSummary") or "-"),
        f"{model.approval_count(obj)}/{spec.get('required', '?')}",
        str(spec.get("expiresAt")),
        _age(obj, now),
    ]
    return [str(meta.get("namespace")), *row] if with_namespace else row


def _list(args: argparse.Namespace, now: dt.datetime) -> int:
    api, namespace = _api(args)
    if args.all_namespaces:
        result = api.list_cluster_custom_object(model.GROUP, model.VERSION, model.PLURAL)
    else:
        result = api.list_namespaced_custom_object(model.GROUP, model.VERSION, namespace, model.PLURAL)
    items = [
        i for i in result.get("items", []) if not args.state or model.effective_state(i, now) == args.state
    ]
    if args.format == "json":
        print(json.dumps([model.record_view(i, now) for i in items], indent=2))
        return 0
    header = ["NAME", "STATE", "REQUESTER", "RULE", "SKILL", "APPROVALS", "EXPIRES", "AGE"]
    if args.all_namespaces:
        header.insert(0, "NAMESPACE")
    rows = [header, *(_row(i, now, args.all_namespaces) for i in items)]
    widths = [max(len(r[c]) for r in rows) for c in range(len(header))]
    for r in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)).rstrip())
    return 0


def _show(args: argparse.Namespace, now: dt.datetime) -> int:
    api, namespace = _api(args)
    obj = api.get_namespaced_custom_object(model.GROUP, model.VERSION, namespace, model.PLURAL, args.name)
    if args.format == "json":
        print(json.dumps(obj, indent=2))
        return 0
    spec = model.spec_of(obj)
    requester, request = spec.get("requester") or {}, spec.get("request") or {}
    print(f"Name:       {args.name} ({namespace})")
    print(
        f"State:      {model.effective_state(obj, now)}  "
        f"({model.approval_count(obj)}/{spec.get('required')} approvals)"
    )
    print(f"Expires:    {spec.get('expiresAt')}")
    print(
        f"Requester:  {(requester.get('identity') or {}).get('sub')}  workload "
        f"{(requester.get('workload') or {}).get('serviceAccount')}"
    )
    print(f"Policy:     {spec.get('policy')}  rule {spec.get('rule')}: {spec.get('message')}")
    print(
        f"Request:    {request.get('method')} {request.get('path')}  model {request.get('model')}  "
        f"skills {request.get('skillSummary')}"
    )
    print(f"Prompt:     {request.get('promptSummary')}")
    print(f"Digest:     {spec.get('requestDigest')}")
    approvers = spec.get("approvers") or {}
    print(f"Approvers:  groups {approvers.get('groups') or []}  users {approvers.get('users') or []}")
    for review in model.reviews_of(obj):
        print(
            f"Review:     {review.get('time')}  {review.get('reviewer')}  {review.get('decision')}: "
            f"{review.get('reason')}"
        )
    return 0


def _review(args: argparse.Namespace, decision: str) -> int:
    from kubernetes.client.exceptions import ApiException

    if not args.reason.strip():
        print("error: --reason must not be empty", file=sys.stderr)
        return 2
    api, namespace = _api(args)
    for _ in range(_CONFLICT_RETRIES):
        obj = api.get_namespaced_custom_object(model.GROUP, model.VERSION, namespace, model.PLURAL, args.name)
        reviews = [dict(r) for r in model.reviews_of(obj)]
        patch = {
            "metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]},
            "status": {"reviews": [*reviews, {"decision": decision, "reason": args.reason.strip()}]},
        }
        try:
            result = api.patch_namespaced_custom_object_status(
                model.GROUP,
                model.VERSION,
                namespace,
                model.PLURAL,
                args.name,
                patch,
                _content_type="application/merge-patch+json",
            )
        except ApiException as error:
            if error.status == 409:
                continue  # someone reviewed at the same time: re-read and try again
            raise
        state = (result.get("status") or {}).get("state")
        print(
            f"{args.name}: {decision} recorded; state {state} "
            f"({model.approval_count(result)}/{model.spec_of(result).get('required')} approvals)"
        )
        return 0
    print(f"error: {args.name} kept changing; try again", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    now = dt.datetime.now(dt.UTC)
    try:
        if args.action == "list":
            return _list(args, now)
        if args.action == "show":
            return _show(args, now)
        return _review(args, model.APPROVE if args.action == "approve" else model.DENY)
    except ApiException as error:
        print(f"error: {error.status} {_api_message(error)}", file=sys.stderr)
        return 1
    except ConfigException as error:
        print(f"error: kubeconfig: {error}", file=sys.stderr)
        return 1
