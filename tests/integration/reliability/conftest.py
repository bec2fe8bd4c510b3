"""Fixtures for the reliability and security tests: the real sidecar CLI with every hook, real
OPA with an operator-built bundle, the stack's SeaweedFS, the fake Claude upstream (the only fake).

`cli_sidecar(tmp, **env)` starts `skillwarden sidecar` and yields a `CliSidecar`; `RELIABILITY_POLICY`
helpers live in `reliability_support.py` (uniquely named: several folders have a conftest.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from reliability_support import (
    REAL_KEY,
    CliSidecar,
    LocalOpa,
    SidecarStarter,
    new_prefix,
    policy,
    sidecar_env,
    start_opa_with,
)

from skillwarden_devstack import fake_claude, tools


@pytest.fixture(scope="session")
def opa_binary() -> Path:
    return tools.ensure_all().opa


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
def prefix() -> str:
    return new_prefix("t")


@pytest.fixture
def reliability_opa(
    stack: dict[str, Any], opa_binary: Path, tmp_path: Path, prefix: str
) -> Iterator[LocalOpa]:
    opa = start_opa_with(opa_binary, tmp_path / "opa", [policy(prefix, stack["s3"]["bucket"])])
    yield opa
    opa.stop()


@pytest.fixture
def cli_sidecar(
    stack: dict[str, Any],
    fake: tuple[fake_claude.FakeClaude, str],
    provider_key: Path,
    reliability_opa: LocalOpa,
    tmp_path: Path,
    prefix: str,
) -> SidecarStarter:
    @contextlib.asynccontextmanager
    async def start(**extra_env: str) -> AsyncIterator[CliSidecar]:
        env, port, admin = sidecar_env(
            stack, fake[1], reliability_opa.url, provider_key, tmp_path, prefix, **extra_env
        )
        sidecar = CliSidecar(
            f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}", env, tmp_path / "sidecar.log"
        )
        await sidecar.start()
        try:
            yield sidecar
        finally:
            if sidecar.process is not None and sidecar.process.returncode is None:
                await sidecar.stop()

    return start
