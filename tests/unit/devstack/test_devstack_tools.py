"""Bad input for the stack's tooling: corrupt cache, failing build, missing system package."""

from __future__ import annotations

from pathlib import Path

import pytest

from skillwarden_devstack import tools
from skillwarden_devstack.processes import StackError


def test_corrupt_cached_binary_is_removed_and_rebuild_needs_go(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKILLWARDEN_CACHE", str(tmp_path))
    corrupt = tmp_path / "bin" / "opa-v9.9.9"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"\x7fELF truncated garbage")
    corrupt.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
    with pytest.raises(StackError) as failure:
        tools.build_go_tool("opa", "v9.9.9")
    assert failure.value.component == "opa"
    assert "`go` is not on PATH" in str(failure.value)
    assert not corrupt.exists()


def test_failing_build_names_the_component_and_keeps_its_log(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKILLWARDEN_CACHE", str(tmp_path))
    monkeypatch.setenv("GOFLAGS", "-mod=mod")
    monkeypatch.setenv("GOPROXY", "off")  # no module can be fetched: the build must fail, fast
    with pytest.raises(StackError) as failure:
        tools.build_go_tool("opa", "v0.0.0-does-not-exist")
    assert failure.value.component == "opa"
    assert "build of v0.0.0-does-not-exist failed" in str(failure.value)
    assert failure.value.log is not None and failure.value.log.read_text()
    assert not (tmp_path / "bin" / "opa-v0.0.0-does-not-exist").exists()


def test_missing_system_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(StackError) as failure:
        tools._system("etcd", "etcd-binary-that-is-not-there", "etcd-server")
    assert "apt-get install -y etcd-server" in str(failure.value)
