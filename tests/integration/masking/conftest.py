"""Real OPA (a bundle compiled by the operator's `build_bundle` from a SkillPolicy with masking),
the fake Claude upstream (the only fake), and the real sidecar app with the masking hook installed
the way `skillwarden sidecar` installs it."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from masking_it_support import NAMESPACE, POLICY, PROVIDER_KEY, WORKLOAD_SA, RecordProbe, Sidecar

from skillwarden_devstack import fake_claude, processes, tools
from skillwarden_operator.bundle import build_bundle
from skillwarden_sidecar import app as sidecar_app
from skillwarden_sidecar.config import SidecarConfig
from skillwarden_sidecar.masking import sidecar_hook
from skillwarden_sidecar.pipeline import Hooks


@pytest.fixture(scope="module")
def masking_opa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("masking-opa")
    bundle = build_bundle(NAMESPACE, [POLICY])
    assert not bundle.invalid, bundle.invalid
    (work / "bundle.tar.gz").write_bytes(bundle.data)
    port = processes.free_port()
    running = processes.spawn("opa-masking", [str(tools.ensure_all().opa), "run", "--server",
                                              f"--addr=127.0.0.1:{port}", "--diagnostic-addr=",
                                              "--bundle", str(work / "bundle.tar.gz")], work / "opa.log")
    processes.wait_until("opa-masking", lambda: processes.port_open(port), running, 30, "listening")
    yield f"http://127.0.0.1:{port}"
    processes.stop(running)


@pytest.fixture
async def upstream(tmp_path: Path) -> AsyncIterator[tuple[fake_claude.FakeClaude, str, Path]]:
    key_file = tmp_path / "provider-key"
    key_file.write_text(PROVIDER_KEY + "\n")
    fake = fake_claude.FakeClaude(fake_claude.Settings(api_key_file=str(key_file)))
    async with fake_claude.running(fake) as url:
        yield fake, url, key_file


@pytest.fixture
async def sidecar(upstream: tuple[fake_claude.FakeClaude, str, Path], masking_opa: str,
                  tmp_path: Path) -> AsyncIterator[Sidecar]:
    _, url, key_file = upstream
    hmac_key = tmp_path / "hmac-key"
    hmac_key.write_bytes(b"masking-integration-test-key-0001")
    parser = argparse.ArgumentParser()
    sidecar_hook.configure(parser)
    hooks = Hooks()
    sidecar_hook.install(parser.parse_args(["--masking-hmac-key-file", str(hmac_key)]), None, hooks)
    assert isinstance(hooks.request_masking, sidecar_hook.MaskingHook)
    probe = RecordProbe(hooks.request_masking)
    hooks.recording = probe
    config = SidecarConfig(namespace=NAMESPACE, pod_name="report-7f9c", service_account=WORKLOAD_SA,
                           provider_key_file=key_file, upstream_url=url, opa_url=masking_opa, opa_timeout=2.0,
                           port=0, admin_port=0, admin_host="127.0.0.1")
    application = sidecar_app.build_app(config, hooks)
    runner, port = await sidecar_app.start(application, config, "127.0.0.1", 0)
    try:
        yield Sidecar(f"http://127.0.0.1:{port}", application, hooks.request_masking, probe)
    finally:
        with contextlib.suppress(Exception):
            await runner.cleanup()
