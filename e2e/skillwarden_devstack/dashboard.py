"""The Grafana dashboard and the Prometheus alert rules, generated from one table of queries.

Why generated rather than hand-kept JSON: every PromQL expression lives here once, so tests can
list them (`dashboard_exprs()`, `alert_exprs()`), check each metric name against the modules that
define the metrics, parse them with promtool and evaluate them against the demo's Prometheus.
The dashboard model comes from Grafana's own typed builders (grafana-foundation-sdk), so panel and
variable JSON follows the schema Grafana publishes instead of a copy of an exported dashboard.

`python -m skillwarden_devstack.dashboard` rewrites the chart's files;
`python -m skillwarden_devstack.dashboard --check` fails when they are out of date (a test runs it).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from grafana_foundation_sdk.builders import common, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as gm
from grafana_foundation_sdk.models import prometheus as pm

CHART_DIR = Path(__file__).resolve().parents[2] / "charts" / "skillwarden"
DASHBOARD_FILE = CHART_DIR / "dashboards" / "skillwarden.json"
ALERTS_FILE = CHART_DIR / "dashboards" / "skillwarden-alerts.yaml"
DASHBOARD_UID = "skillwarden-overview"

# Template variables a panel query may use, and what stands in for them when a query is run
# outside Grafana (promtool, the demo's checks): every value of a multi-select, a 1 m window.
VARIABLE_STAND_INS: dict[str, str] = {
    "$__rate_interval": "1m",
    "$__range": "5m",
    "$namespace": ".*",
    "$skill": ".*",
    "$model": ".*",
}

# Series that skillwarden does not define: the kube-apiserver's own view of our admission webhooks
# (the only witness when the operator is down or unreachable). Prometheus must scrape the API
# server for them (kube-prometheus does by default). Tests check the names against its /metrics.
EXTERNAL_SERIES: dict[str, str] = {
    "apiserver_admission_webhook_request_total": "kube-apiserver",
    "apiserver_admission_webhook_rejection_count": "kube-apiserver",
    "apiserver_admission_webhook_fail_open_count": "kube-apiserver",
}
# Our webhook entries are all named *.skillwarden.io (templates/webhooks.yaml).
_OUR_WEBHOOKS = 'name=~".+[.]skillwarden[.]io"'

# Sidecar series carry the workload's namespace; the selector every sidecar panel uses.
_REQ = 'namespace=~"$namespace",skill=~"$skill",model=~"$model"'
_NS = 'namespace=~"$namespace"'

PanelKind = Literal["timeseries", "stat", "table"]


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class PanelSpec:
    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: PanelKind = "timeseries"
    width: int = 12
    stacked: bool = False


@dataclass(frozen=True)
class RowSpec:
    title: str
    panels: tuple[PanelSpec, ...] = field(default_factory=tuple)


def _q(expr: str, legend: str = "") -> Query:
    return Query(expr, legend)


def _quantiles(metric: str, selector: str, by: str, what: str) -> tuple[Query, ...]:
    return tuple(
        _q(f"histogram_quantile({q}, sum by (le{', ' + by if by else ''}) "
           f"(rate({metric}_bucket{{{selector}}}[$__rate_interval])))",
           f"{what} p{int(q * 100)}" + (f" {{{{{by}}}}}" if by else ""))
        for q in (0.5, 0.99))


ROWS: tuple[RowSpec, ...] = (
    RowSpec("Decisions", (
        PanelSpec("Requests by decision", "Requests through the sidecars by policy decision.",
                  (_q(f"sum by (decision) (rate(skillwarden_requests_total{{{_REQ}}}[$__rate_interval]))",
                      "{{decision}}"),), unit="reqps", stacked=True),
        PanelSpec("Requests by namespace and skill", "Who uses which skill, and what was decided.",
                  (_q("sum by (namespace, skill, decision) "
                      f"(rate(skillwarden_requests_total{{{_REQ}}}[$__rate_interval]))",
                      "{{namespace}} {{skill}} {{decision}}"),), unit="reqps"),
        PanelSpec("Requests by workload", "Per workload identity: each sidecar serves one pod, so the "
                  "scrape's `workload` label (the pod's controller, set by the chart's PodMonitor) is "
                  "the workload; callers' own identities are in the session records.",
                  (_q("sum by (namespace, workload, decision) "
                      f"(rate(skillwarden_requests_total{{{_REQ}}}[$__rate_interval]))",
                      "{{namespace}}/{{workload}} {{decision}}"),), unit="reqps", width=24),
        PanelSpec("Deny rate", "Share of requests denied by policy.",
                  (_q(f'sum(rate(skillwarden_requests_total{{decision="deny",{_REQ}}}[$__rate_interval])) '
                      f"/ clamp_min(sum(rate(skillwarden_requests_total{{{_REQ}}}[$__rate_interval])), 1e-9)",
                      "deny"),), unit="percentunit", kind="stat", width=6),
        PanelSpec("Approval rate", "Share of requests that needed a human approval.",
                  (_q('sum(rate(skillwarden_requests_total{decision="require_approval",'
                      f"{_REQ}}}[$__rate_interval])) "
                      f"/ clamp_min(sum(rate(skillwarden_requests_total{{{_REQ}}}[$__rate_interval])), 1e-9)",
                      "approval"),), unit="percentunit", kind="stat", width=6),
        PanelSpec("Refusals by cause", "Requests the sidecar refused or failed, by cause.",
                  (_q(f"sum by (cause) (rate(skillwarden_errors_total{{{_NS}}}[$__rate_interval]))",
                      "{{cause}}"),), unit="reqps"),
    )),
    RowSpec("Masking", (
        PanelSpec("Masked entities by type", "Regulated values masked, by entity type and direction "
                  "(upstream = what Claude saw, client = what the app got, record = the audit trail).",
                  (_q("sum by (entity, direction) "
                      f"(rate(skillwarden_masked_entities_total{{{_NS}}}[$__rate_interval]))",
                      "{{entity}} {{direction}}"),), unit="short", width=24, stacked=True),
    )),
    RowSpec("Approvals", (
        PanelSpec("Approval outcomes", "Held requests by approval outcome (Used = approved and "
                  "forwarded; Pending = hold time ran out before a review).",
                  (_q(f"sum by (state) (increase(skillwarden_approvals_total{{{_NS}}}[$__range]))",
                      "{{state}}"),), kind="stat", width=8),
        PanelSpec("Approval latency", "How long requests were held waiting for a human decision.",
                  _quantiles("skillwarden_approval_wait_seconds", _NS, "", "wait"), unit="s", width=8),
        PanelSpec("Approvals requested by namespace and skill", "Requests that asked for a human decision.",
                  (_q("sum by (namespace, skill) (rate(skillwarden_requests_total"
                      f'{{decision="require_approval",{_REQ}}}[$__rate_interval]))',
                      "{{namespace}} {{skill}}"),), unit="reqps", width=8),
    )),
    RowSpec("Latency", (
        PanelSpec("Sidecar added latency", "Time the sidecar adds before the upstream answer starts "
                  "(policy, masking, durable record), p50 and p99.",
                  _quantiles("skillwarden_added_latency_seconds", _NS, "route", "added"), unit="s", width=8),
        PanelSpec("Upstream time to first token", "Claude API time to first byte / first SSE event.",
                  _quantiles("skillwarden_upstream_ttft_seconds", _NS, "route", "ttft"), unit="s", width=8),
        PanelSpec("Policy decision time", "OPA decision round trip, p50 and p99.",
                  _quantiles("skillwarden_decision_seconds", _NS, "", "decision"), unit="s", width=8),
    )),
    RowSpec("Session records", (
        PanelSpec("Records spooled / shipped / failed", "Record entries made durable locally, shipped "
                  "to the Object Lock bucket, and failures.",
                  (_q(f"sum(rate(skillwarden_records_spooled_total{{{_NS}}}[$__rate_interval]))", "spooled"),
                   _q(f"sum(rate(skillwarden_records_shipped_total{{{_NS}}}[$__rate_interval]))", "shipped"),
                   _q(f"sum by (cause) (rate(skillwarden_records_failed_total{{{_NS}}}[$__rate_interval]))",
                      "failed {{cause}}")), unit="ops", width=8),
        PanelSpec("Oldest unshipped record", "Age of the oldest record not yet in S3, per pod.",
                  (_q(f"max by (namespace, pod) (skillwarden_spool_oldest_unshipped_age_seconds{{{_NS}}})",
                      "{{namespace}}/{{pod}}"),), unit="s", width=8),
        PanelSpec("Spool size", "Bytes waiting on the local spool, per pod; 'available' is 0 while "
                  "recording refuses requests.",
                  (_q(f"max by (namespace, pod) (skillwarden_spool_bytes{{{_NS}}})", "{{namespace}}/{{pod}}"),
                   _q(f"min(skillwarden_recording_available{{{_NS}}})", "available")),
                  unit="bytes", width=8),
    )),
    RowSpec("Policies and bundles", (
        PanelSpec("Policies by state", "SkillPolicies per namespace: ready, or invalid (rejected from "
                  "the bundle; see the policy's Ready condition).",
                  (_q(f"sum by (namespace, state) (skillwarden_operator_policies{{{_NS}}})",
                      "{{namespace}} {{state}}"),), width=8),
        PanelSpec("Bundle compile time", "Time to compile a namespace's policies into a bundle, and "
                  "compilations by result.",
                  (*_quantiles("skillwarden_operator_compile_duration_seconds", "", "", "compile"),),
                  unit="s", width=8),
        PanelSpec("Bundle requests", "Bundle downloads by OPA, by namespace and HTTP status "
                  "(304 = unchanged, 404 = no policies).",
                  (_q("sum by (namespace, code) "
                      f"(rate(skillwarden_operator_bundle_requests_total{{{_NS}}}[$__rate_interval]))",
                      "{{namespace}} {{code}}"),), unit="reqps", width=8),
        PanelSpec("Served bundle revisions", "The bundle revision and size each namespace's sidecars get.",
                  (_q(f"max by (namespace, revision) (skillwarden_operator_bundle_info{{{_NS}}})", ""),
                   _q(f"max by (namespace) (skillwarden_operator_bundle_size_bytes{{{_NS}}})", "")),
                  kind="table", width=16),
        PanelSpec("Compilations by result", "Namespace compilations (failure: some policy was invalid).",
                  (_q("sum by (result) (increase(skillwarden_operator_compilations_total[$__range]))",
                      "{{result}}"),), kind="stat", width=8),
    )),
    RowSpec("Injection and admission", (
        PanelSpec("Injections by result", "Pods injected, skipped (with reason), denied or failed by the "
                  "webhook.",
                  (_q("sum by (namespace, result, reason) "
                      f"(increase(skillwarden_injections_total{{{_NS}}}[$__range]))",
                      "{{namespace}} {{result}} {{reason}}"),), width=12),
        PanelSpec("SkillPolicy admission", "SkillPolicy admission reviews by result (denied = a policy "
                  "was rejected with the field named).",
                  (_q("sum by (result) "
                      "(rate(skillwarden_operator_admission_reviews_total[$__rate_interval]))",
                      "{{result}}"),), unit="reqps", width=12),
        PanelSpec("Webhook calls seen by the API server", "The kube-apiserver's calls to our admission "
                  "webhooks by HTTP code, and failures it could not deliver (the only witness when the "
                  "operator is down). Needs Prometheus to scrape the API server.",
                  (_q("sum by (name, code) "
                      f"(rate(apiserver_admission_webhook_request_total{{{_OUR_WEBHOOKS}}}[$__rate_interval]))",
                      "{{name}} {{code}}"),
                   _q("sum by (name) (rate(apiserver_admission_webhook_rejection_count"
                      f'{{{_OUR_WEBHOOKS},error_type="calling_webhook_error"}}[$__rate_interval]))',
                      "{{name}} unreachable (refused)")), unit="reqps", width=24),
    )),
)


@dataclass(frozen=True)
class AlertSpec:
    name: str
    expr: str
    duration: str
    severity: Literal["critical", "warning"]
    summary: str
    description: str


ALERTS: tuple[AlertSpec, ...] = (
    AlertSpec("SkillwardenRecordShippingFailing",
              "sum by (namespace, pod) "
              '(increase(skillwarden_records_failed_total{cause!="admitted_unavailable"}[2m])) > 0',
              "1m", "critical", "Session records fail to reach the Object Lock bucket",
              "{{ $labels.namespace }}/{{ $labels.pod }} failed to ship or spool records in the last "
              "2 minutes. Requests are refused once the spool bound is reached (fail closed). Check S3 "
              "reachability and credentials."),
    AlertSpec("SkillwardenRecordingUnavailable",
              "min by (namespace, pod) (skillwarden_recording_available) == 0",
              "1m", "critical", "Recording is unavailable; the sidecar refuses requests",
              "{{ $labels.namespace }}/{{ $labels.pod }} cannot make records durable, so it refuses every "
              "request (fail closed)."),
    AlertSpec("SkillwardenSpoolFilling",
              "max by (namespace, pod) (skillwarden_spool_oldest_unshipped_age_seconds) > 300",
              "2m", "warning", "Unshipped session records are piling up on the spool",
              "The oldest unshipped record of {{ $labels.namespace }}/{{ $labels.pod }} is "
              "{{ $value | humanizeDuration }} old; the spool is filling."),
    AlertSpec("SkillwardenOpaBundleStale",
              "sum by (namespace, pod) "
              '(increase(skillwarden_errors_total{cause="policy_unavailable"}[5m])) > 0',
              "2m", "critical", "Sidecars have no current policy bundle",
              "{{ $labels.namespace }}/{{ $labels.pod }} denied requests because OPA had no loaded bundle or "
              "did not answer. Check the operator's bundle service and the opa container."),
    AlertSpec("SkillwardenPolicyNotReady",
              'sum by (namespace) (skillwarden_operator_policies{state="invalid"}) > 0',
              "10m", "warning", "SkillPolicies are invalid; the bundle leaves them out",
              "{{ $value }} SkillPolicies in {{ $labels.namespace }} are invalid and not in the served "
              "bundle, so enforcement no longer matches Git. "
              "See `kubectl get skp -n {{ $labels.namespace }}`."),
    AlertSpec("SkillwardenDenySpike",
              'sum by (namespace) (rate(skillwarden_requests_total{decision="deny"}[10m])) > 0.1 and '
              'sum by (namespace) (rate(skillwarden_requests_total{decision="deny"}[10m])) '
              '> 3 * sum by (namespace) (rate(skillwarden_requests_total{decision="deny"}[1h] offset 10m))',
              "5m", "warning", "Policy denials spiked",
              "Denials in {{ $labels.namespace }} are more than three times the previous hour's rate: a "
              "misbehaving workload, or a policy change that blocks legitimate use."),
    AlertSpec("SkillwardenWebhookErrors",
              'sum by (namespace) (increase(skillwarden_injections_total{result="failed"}[5m])) > 0',
              "0m", "critical", "The injection webhook is failing",
              "The injection webhook failed for pods in {{ $labels.namespace }}; with failurePolicy=Fail "
              "those pods are not created. See the operator's log and the pods' owner Events."),
    AlertSpec("SkillwardenWebhookUnreachable",
              "sum by (name) (increase(apiserver_admission_webhook_rejection_count"
              f'{{{_OUR_WEBHOOKS},error_type="calling_webhook_error"}}[5m])) > 0 or '
              "sum by (name) "
              f"(increase(apiserver_admission_webhook_fail_open_count{{{_OUR_WEBHOOKS}}}[5m])) > 0",
              "0m", "critical", "The API server cannot reach a skillwarden webhook",
              "The API server could not call {{ $labels.name }} in the last 5 minutes: with "
              "failurePolicy=Fail the requests were refused, with Ignore they passed unchecked. Check the "
              "operator pods, the webhook Service and the certificate (caBundle)."),
    AlertSpec("SkillwardenApprovalsExpiringUnreviewed",
              'sum by (namespace) (increase(skillwarden_approvals_total{state="Expired"}[1h])) > 0',
              "0m", "warning", "Approval requests expired without a review",
              "{{ $value }} SkillApprovals in {{ $labels.namespace }} expired unreviewed in the last hour: "
              "reviewers are not seeing them."),
)


def dashboard_exprs() -> list[str]:
    """Every panel query, as written in the dashboard (with Grafana variables)."""
    return [query.expr for row in ROWS for panel in row.panels for query in panel.queries]


def alert_exprs() -> list[str]:
    return [alert.expr for alert in ALERTS]


def all_exprs() -> list[tuple[str, str]]:
    """(where, query Prometheus can run) for every panel query and alert expression: what the
    demo's checks evaluate against the stack's Prometheus."""
    panels = [(f"panel {panel.title!r}", concrete(query.expr))
              for row in ROWS for panel in row.panels for query in panel.queries]
    return panels + [(f"alert {alert.name}", alert.expr) for alert in ALERTS]


def concrete(expr: str) -> str:
    """The query as Prometheus itself can run it: Grafana variables replaced by stand-ins."""
    for variable in sorted(VARIABLE_STAND_INS, key=len, reverse=True):
        expr = expr.replace(variable, VARIABLE_STAND_INS[variable])
    return expr


def _datasource() -> gm.DataSourceRef:
    return gm.DataSourceRef(type_val="prometheus", uid="${datasource}")


def _label_variable(name: str, label: str) -> gd.QueryVariable:
    return (gd.QueryVariable(name).label(label)
            .query(f"label_values(skillwarden_requests_total, {name})")
            .datasource(_datasource()).multi(True).include_all(True).all_value(".*")
            .refresh(gm.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(gm.VariableSort.ALPHABETICAL_ASC))


def _panel(spec: PanelSpec, panel_id: int) -> Any:
    builder: Any
    if spec.kind == "stat":
        builder = stat.Panel()
    elif spec.kind == "table":
        builder = table.Panel()
    else:
        builder = timeseries.Panel()
        if spec.stacked:
            builder = builder.stacking(common.StackingConfig().mode(cm.StackingMode.NORMAL)).fill_opacity(30)
    builder = (builder.id(panel_id).title(spec.title).description(spec.description).unit(spec.unit)
               .datasource(_datasource()).height(8).span(spec.width))
    for index, query in enumerate(spec.queries):
        target = prometheus.Dataquery().expr(query.expr).ref_id(chr(ord("A") + index))
        if spec.kind == "table":
            target = target.instant().format(pm.PromQueryFormat.TABLE)
        elif query.legend:
            target = target.legend_format(query.legend)
        builder = builder.with_target(target)
    return builder


def build_dashboard() -> dict[str, Any]:
    board = (gd.Dashboard("skillwarden").uid(DASHBOARD_UID)
             .description("Claude API governance: decisions, masking, approvals, latency, session "
                          "records, policy bundles and injection, per namespace, skill and model.")
             .tags(["skillwarden", "anthropic", "claude"]).refresh("30s").time("now-1h", "now")
             .timezone("browser").editable()
             .with_variable(gd.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
             .with_variable(_label_variable("namespace", "Namespace"))
             .with_variable(_label_variable("skill", "Skill"))
             .with_variable(_label_variable("model", "Model")))
    panel_id = 1
    for row in ROWS:
        board = board.with_row(gd.Row(row.title).id(panel_id))
        panel_id += 1
        for spec in row.panels:
            board = board.with_panel(_panel(spec, panel_id))
            panel_id += 1
    document: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    return document


def alert_rules(pending_for: str | None = None) -> dict[str, Any]:
    """A plain Prometheus rules file (promtool-checkable); the chart's PrometheusRule embeds it.
    `pending_for` replaces every `for:` (a demo that cannot wait minutes uses "0s")."""
    return {"groups": [{"name": "skillwarden", "rules": [
        {"alert": alert.name, "expr": alert.expr, "for": pending_for or alert.duration,
         "labels": {"severity": alert.severity},
         "annotations": {"summary": alert.summary, "description": alert.description}}
        for alert in ALERTS]}]}


def install_rules(rules_dir: Path, prometheus_url: str, pending_for: str | None = None,
                  file_name: str = "skillwarden-alerts.yaml") -> Path:
    """Load the alert rules into a running Prometheus that reads `rules_dir/*.yaml` (the local
    stack's `prometheus_rules_dir`) and ask it to reload. Returns the file written."""
    path = rules_dir / file_name
    path.write_text(yaml.safe_dump(alert_rules(pending_for), sort_keys=False, width=120))
    reload_prometheus(prometheus_url)
    return path


def reload_prometheus(prometheus_url: str) -> None:
    request = urllib.request.Request(f"{prometheus_url}/-/reload", method="POST")  # noqa: S310 - loopback
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        if response.status != 200:
            raise RuntimeError(f"Prometheus refused to reload its rules: HTTP {response.status}")


def render_files() -> dict[Path, str]:
    header = ("# Generated by `python -m skillwarden_devstack.dashboard` from "
              "e2e/skillwarden_devstack/dashboard.py; do not edit.\n")
    return {
        DASHBOARD_FILE: json.dumps(build_dashboard(), indent=2, sort_keys=True) + "\n",
        ALERTS_FILE: header + yaml.safe_dump(alert_rules(), sort_keys=False, width=120),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail if the chart's files are out of date")
    args = parser.parse_args(argv)
    stale = []
    for path, text in render_files().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.write_text(text)
    if stale:
        print("out of date (run `python -m skillwarden_devstack.dashboard`): " + ", ".join(stale),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
