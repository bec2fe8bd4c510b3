"""Ed25519 signing keys: load or create the sidecar's key, name keys, load an auditor's pins.

A key id is `ed25519-` + the first 16 hex digits of SHA-256 over the raw 32-byte public key, so
the id is derived from the key itself and cannot be claimed by a different key.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class SigningKeyError(ValueError):
    """A key file that cannot be used (wrong type, unreadable)."""


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519-" + hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """Read a PEM (PKCS#8) Ed25519 private key; create one (mode 0600) when the file is absent.

    The public half is written next to it as `<path>.pub` so operators can publish and pin it.
    """
    if path.exists():
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as error:
            raise SigningKeyError(f"signing key {path} is not a PEM private key: {error}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError(f"signing key {path} is not an Ed25519 key")
    else:
        key = Ed25519PrivateKey.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        temporary = path.with_suffix(path.suffix + ".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    public_file = path.with_name(path.name + ".pub")
    # Best effort: a key mounted from a Secret lives on a read-only volume (the public key is
    # published to the bucket anyway).
    with contextlib.suppress(OSError):
        if not public_file.exists():
            public_file.write_bytes(public_pem(key.public_key()))
    return key


def load_public_key(data: bytes, source: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as error:
        raise SigningKeyError(f"{source} is not a PEM public key: {error}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"{source} is not an Ed25519 public key")
    return key


def load_trusted_keys(paths: list[Path]) -> dict[str, Ed25519PublicKey]:
    """Pinned keys by id. A directory contributes every `*.pem` / `*.pub` file inside it; a
    private key file contributes its public half (convenient for the key's owner)."""
    trusted: dict[str, Ed25519PublicKey] = {}
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix in {".pem", ".pub"}))
        else:
            files.append(path)
    for file in files:
        try:
            data = file.read_bytes()
        except OSError as error:
            raise SigningKeyError(f"cannot read trusted key {file}: {error}") from None
        if b"PRIVATE KEY" in data:
            private = serialization.load_pem_private_key(data, password=None)
            if not isinstance(private, Ed25519PrivateKey):
                raise SigningKeyError(f"{file} is not an Ed25519 key")
            public = private.public_key()
        else:
            public = load_public_key(data, str(file))
        trusted[key_id(public)] = public
    return trusted
