"""The provider API key: read from a mounted file, re-read when the file changes.

Kubernetes updates a mounted Secret by swapping a symlink (`..data`), so both the inode and the
mtime of the resolved file change; a plain rewrite changes mtime/size. `os.stat` follows the link
and costs about a microsecond, so it is checked on every request and a rotation takes effect on
the very next call without a restart. The key itself never appears in `repr`, logs or errors.
"""

from __future__ import annotations

import os
from pathlib import Path


class ProviderKeyError(RuntimeError):
    """The key file is missing, unreadable or empty (the message names the file, not the key)."""


class ProviderKey:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: tuple[int, int, int, int] | None = None
        self._key = ""

    def __repr__(self) -> str:
        return f"ProviderKey(path={str(self._path)!r})"

    @property
    def path(self) -> Path:
        return self._path

    def get(self) -> str:
        try:
            info = os.stat(self._path)
        except OSError as error:
            raise ProviderKeyError(f"provider key file {self._path} unreadable: {error.strerror}") from None
        stamp = (info.st_ino, info.st_dev, info.st_mtime_ns, info.st_size)
        if stamp != self._stamp:
            try:
                key = self._path.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as error:
                raise ProviderKeyError(f"provider key file {self._path} unreadable: "
                                       f"{type(error).__name__}") from None
            if not key or any(c in key for c in "\r\n\0"):
                raise ProviderKeyError(f"provider key file {self._path} is empty or not a single line")
            self._key, self._stamp = key, stamp
        return self._key

    def readable(self) -> bool:
        try:
            self.get()
        except ProviderKeyError:
            return False
        return True
