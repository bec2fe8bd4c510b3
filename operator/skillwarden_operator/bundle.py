"""Deterministic OPA bundles: same policies in, same bytes out, on every operator replica.

Layout of `<namespace>.tar.gz`:

    /.manifest                          {"revision": "sha256:...", "roots": ["skillwarden"]}
    /skillwarden/skillwarden.rego       the static, vetted decision policy (package skillwarden)
    /skillwarden/policies/data.json     data.skillwarden.policies: compiled from the SkillPolicies
    /skillwarden/bundle/data.json       data.skillwarden.bundle: {"revision": "sha256:..."}

The revision is the SHA-256 over the sorted (path, content) pairs of the Rego and the compiled
data — everything that decides. It is computed first, then written into the manifest and into a
small data document so the decision can report `bundle_revision` itself (OPA keeps a bundle's
manifest outside `data` under a name chosen by whoever configures OPA; reading it from our own
data document keeps the Rego independent of that name). Tar entries are sorted with fixed
mtime/uid/gid/mode and the gzip header carries mtime 0, so the archive bytes — and the ETag —
depend on the content only.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skillwarden_operator import compiler, policy_model

REGO_DIR = Path(__file__).with_name("rego")
ROOTS = ["skillwarden"]
_MTIME = 0


@dataclass(frozen=True)
class Bundle:
    namespace: str
    data: bytes
    revision: str
    document: dict[str, Any] = field(repr=False)
    invalid: dict[str, list[str]] = field(default_factory=dict)  # policy key -> errors
    included: tuple[str, ...] = ()

    @property
    def etag(self) -> str:
        return f'"{self.revision}"'


def policy_files() -> dict[str, bytes]:
    """The shipped Rego that goes into bundles (tests and fixtures stay out)."""
    return {f"skillwarden/{path.name}": path.read_bytes()
            for path in sorted(REGO_DIR.glob("*.rego")) if not path.name.endswith("_test.rego")}


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def content_revision(files: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for path in sorted(files):
        content = files[path]
        # Length-prefixed so no two different file sets hash alike.
        digest.update(f"{len(path)}:{path}:{len(content)}:".encode())
        digest.update(content)
    return f"sha256:{digest.hexdigest()}"


def build_bundle(namespace: str, policies: list[dict[str, Any]],
                 min_retention_days: int = policy_model.DEFAULT_MIN_RETENTION_DAYS,
                 entities: frozenset[str] | None = None) -> Bundle:
    result = compiler.compile_namespace(namespace, policies, min_retention_days, entities)
    files = policy_files()
    files["skillwarden/policies/data.json"] = canonical_json(result.document)
    revision = content_revision(files)
    files["skillwarden/bundle/data.json"] = canonical_json({"revision": revision})
    files[".manifest"] = canonical_json({"revision": revision, "roots": ROOTS})
    return Bundle(namespace=namespace, data=_archive(files), revision=revision, document=result.document,
                  invalid=result.invalid, included=tuple(result.included))


def _archive(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(files):
            info = tarfile.TarInfo(name=f"/{path}")
            info.size = len(files[path])
            info.mtime = _MTIME
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(files[path]))
    compressed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=_MTIME, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return compressed.getvalue()


def read_bundle(data: bytes) -> dict[str, bytes]:
    """Files of a bundle archive (for tests and `skillwarden policy test`)."""
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            extracted = tar.extractfile(member)
            if extracted is not None:
                files[member.name.lstrip("/")] = extracted.read()
    return files
