"""Fixtures for sidecar tests against real components (copy these patterns freely).

- `policy_opa`: a real `opa` server (session) pulling a real bundle built by the operator's
  `build_bundle` from `TEST_POLICIES`, served over HTTP with ETags like the operator does.
- `fake`: the fake Anthropic upstream (the only fake), requiring the real provider key.
- `sidecar_factory`: start the real sidecar app in-process on a free loopback port, over real
  HTTP, with any config override and hooks: `async with sidecar_factory(opa_url=...) as sc:`.
- `issuer`: an OIDC issuer (discovery + JWKS over HTTP) that mints RS256 tokens and counts JWKS
  fetches.
Helpers and constants live in `sidecar_support.py` (a uniquely named module: several test folders
have a conftest.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sidecar_support import (
    NAMESPACE,
    REAL_KEY,
    TEST_POLICIES,
    WORKLOAD_SA,
    BundleServer,
    Issuer,
    Opa,
    SidecarFactory,
    SidecarHandle,
    start_opa,
)

from skillwarden_devstack import fake_claude, tools
from skillwarden_sidecar import app as sidecar_app
from skillwarden_sidecar.config import SidecarConfig
from skillwarden_sidecar.pipeline import Hooks


@pytest.fixture(scope="session")
def opa_binary() -> Path:
    return tools.ensure_all().opa


@pytest.fixture(scope="session")
def bundle_server() -> Iterator[BundleServer]:
    server = BundleServer()
    server.publish(NAMESPACE, TEST_POLICIES)
    yield server
    server.close()


@pytest.fixture(scope="session")
def policy_opa(opa_binary: Path, bundle_server: BundleServer,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Opa]:
    opa = start_opa(opa_binary, tmp_path_factory.mktemp("opa"), bundle_server.url, NAMESPACE)
    yield opa
    opa.stop()


@pytest.fixture
def provider_key(tmp_path: Path) -> Path:
    path = tmp_path / "provider-key"
    path.write_text(REAL_KEY + "\n")
    return path


@pytest.fixture
async def fake(provider_key: Path) -> AsyncIterator[tuple[fake_claude.FakeClaude, str]]:
    upstream = fake_claude.FakeClaude(fake_claude.Settings(api_key_file=str(provider_key)))
    async with fake_claude.running(upstream) as url:
        yield upstream, url


@pytest.fixture
def sidecar_factory(fake: tuple[fake_claude.FakeClaude, str], provider_key: Path,
                    policy_opa: Opa) -> SidecarFactory:
    @contextlib.asynccontextmanager
    async def start(hooks: Hooks | None = None, **overrides: Any) -> AsyncIterator[SidecarHandle]:
        settings: dict[str, Any] = {"namespace": NAMESPACE, "pod_name": "report-7f9c",
                                    "service_account": WORKLOAD_SA, "provider_key_file": provider_key,
                                    "upstream_url": fake[1], "opa_url": policy_opa.url, "opa_timeout": 1.0,
                                    "port": 0, "admin_port": 0, "admin_host": "127.0.0.1"}
        settings.update(overrides)
        config = SidecarConfig(**settings)
        application = sidecar_app.build_app(config, hooks)
        traffic, port = await sidecar_app.start(application, config, "127.0.0.1", 0)
        admin, admin_port = await sidecar_app.start(sidecar_app.build_admin_app(application), config,
                                                    "127.0.0.1", 0, admin=True)
        try:
            yield SidecarHandle(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}", application,
                                config)
        finally:
            await admin.cleanup()
            await traffic.cleanup()

    return start


@pytest.fixture
async def sidecar(sidecar_factory: SidecarFactory) -> AsyncIterator[SidecarHandle]:
    async with sidecar_factory() as handle:
        yield handle


@pytest.fixture
async def issuer() -> AsyncIterator[Issuer]:
    it = Issuer()
    runner = web.AppRunner(it.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    it.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield it
    await runner.cleanup()
