"""Wiring of the approval gate into `skillwarden sidecar`: flags, fail-closed defaults, kubeconfig
parsing and the masked prompt summary."""

from __future__ import annotations

import argparse
import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from skillwarden_sidecar import approval_hook
from skillwarden_sidecar.approval_client import KubeAccess
from skillwarden_sidecar.errors import Rejection
from skillwarden_sidecar.pipeline import Decision, Exchange, Hooks, NoApprovals, Workload


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    approval_hook.configure(parser)
    return parser.parse_args(list(argv))


def kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "dev",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {
                            "server": "https://127.0.0.1:6443/",
                            "certificate-authority-data": base64.b64encode(b"PEM").decode(),
                        },
                    }
                ],
                "users": [{"name": "u", "user": {"token": "t0ken"}}],
                "contexts": [{"name": "dev", "context": {"cluster": "c", "user": "u"}}],
            }
        )
    )
    return path


def test_kubeconfig_is_read_for_server_ca_and_token(tmp_path: Path) -> None:
    access = KubeAccess.from_kubeconfig(kubeconfig(tmp_path))
    assert (access.server, access.ca_pem, access.bearer()) == ("https://127.0.0.1:6443", b"PEM", "t0ken")


def test_token_files_are_reread(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("one\n")
    access = KubeAccess(server="https://x", token_file=str(token))
    assert access.bearer() == "one"
    token.write_text("two")
    assert access.bearer() == "two"


def test_off_and_auto_outside_a_cluster_leave_the_fail_closed_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    for argv in (["--approvals", "off"], []):
        hooks = Hooks()
        approval_hook.install(parse(*argv), None, hooks)
        assert isinstance(hooks.approval, NoApprovals) and hooks.contexts == []
    with pytest.raises(ValueError, match="no Kubernetes API configured"):
        approval_hook.install(parse("--approvals", "on"), None, Hooks())


def test_kubeconfig_installs_the_gate_with_its_context(tmp_path: Path) -> None:
    hooks = Hooks()
    approval_hook.install(parse("--approval-kubeconfig", str(kubeconfig(tmp_path))), None, hooks)
    assert isinstance(hooks.approval, approval_hook.DeferredApprovals) and len(hooks.contexts) == 1


def test_empty_notify_secret_file_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        approval_hook.install(
            parse(
                "--approval-kubeconfig",
                str(kubeconfig(tmp_path)),
                "--approval-notify-url",
                "http://127.0.0.1:1/hook",
                "--approval-notify-secret-file",
                str(tmp_path / "secret"),
            ),
            None,
            Hooks(),
        )


async def test_before_start_the_gate_refuses() -> None:
    deferred = approval_hook.DeferredApprovals()
    exchange = Exchange(
        request_id="r",
        received_at=0,
        method="POST",
        path="/v1/messages",
        query="",
        operation="messages.create",
        workload=Workload("ns", "pod", "sa"),
    )
    with pytest.raises(Rejection) as raised:
        await deferred.gate(exchange)
    assert raised.value.status == 503


def test_summary_masks_with_every_detector_and_custom_patterns() -> None:
    masking: dict[str, Any] = {
        "upstream": [],
        "operators": {"EMAIL_ADDRESS": "hmac"},
        "custom": [{"name": "EMPLOYEE_ID", "pattern": "EMP-[0-9]{6}"}],
    }
    decision = Decision(
        action="require_approval",
        reasons=(),
        policy=None,
        rule=None,
        message="",
        masking=masking,
        recording={},
        approval={},
        bundle_revision="",
        raw={},
    )
    exchange = Exchange(
        request_id="r",
        received_at=0,
        method="POST",
        path="/v1/messages",
        query="",
        operation="messages.create",
        workload=Workload("ns", "pod", "sa"),
        decision=decision,
    )
    summary = approval_hook.masked_summary(
        exchange, "pay EMP-123456 at jane@example.com card 4111 1111 1111 1111"
    )
    assert "EMP-123456" not in summary and "jane@example.com" not in summary and "4111" not in summary
    assert "hm_" not in summary  # always redact: no keyed token that could be correlated


def test_a_masking_failure_hides_the_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    from skillwarden_sidecar.masking import Masker

    def explode(self: Any, text: str) -> Any:
        raise RuntimeError("budget exceeded")

    monkeypatch.setattr(Masker, "mask_text", explode)
    exchange = Exchange(
        request_id="r",
        received_at=0,
        method="POST",
        path="/v1/messages",
        query="",
        operation="messages.create",
        workload=Workload("ns", "pod", "sa"),
    )
    summary = approval_hook.masked_summary(exchange, "card 4111 1111 1111 1111")
    assert summary == "[prompt not shown: 24 characters; masking failed]"
