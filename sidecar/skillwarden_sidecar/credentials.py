"""The provider API key: read from a mounted file, re-read when the file changes.

Kubernetes updates a mounted Secret by swapping a symlink (`..data`), so both the inode and the
mtime of the resolved file change; a plain rewrite changes mtime/size. `os.stat` follows the link.
It is checked at most every `recheck_seconds` (1 s): a stat is a system call that lets the
sidecar's background threads take the GIL from the event loop, and at a thousand requests per
second one per request showed up in the profile. The upstream refusing the key (401) makes the
next call check at once (`suspect()`), so a rotation takes effect on the call after the provider
revoked the old key, or within a second. The key itself never appears in `repr`, logs or errors.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path


class ProviderKeyError(RuntimeError):
    """The key file is missing, unreadable or empty (the message names the file, not the key)."""


class ProviderKey:
    def __init__(self, path: Path, recheck_seconds: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._path = path
        self._stamp: tuple[int, int, int, int] | None = None
        self._key = ""
        self._recheck = recheck_seconds
        self._clock = clock
        self._checked_at: float | None = None

    def suspect(self) -> None:
        """The upstream refused the key: look at the file again on the next call."""
        self._checked_at = None

    def __repr__(self) -> str:
        return f"ProviderKey(path={str(self._path)!r})"

    @property
    def path(self) -> Path:
        return self._path

    def get(self) -> str:
        now = self._clock()
        if self._checked_at is not None and now - self._checked_at < self._recheck:
            return self._key
        self._checked_at = None  # until this check succeeds, every call checks
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
        self._checked_at = now
        return self._key

    def readable(self) -> bool:
        try:
            self.get()
        except ProviderKeyError:
            return False
        return True
