"""The per-request access log, written in batches.

One access line per request through a plain StreamHandler is a `write` system call per line (and
a flush), and each of those lets the sidecar's other threads take the GIL from the event loop:
measured ~0.1 ms per request at a thousand requests per second. The access log is for operators
(the audit trail is the session record), so its lines are buffered and written at most `interval`
seconds late, or as soon as `capacity` lines are waiting; anything at WARNING or above, and
shutdown, flush at once.
"""

from __future__ import annotations

import logging
import logging.handlers
import threading


def buffer_logger(name: str, capacity: int = 256, interval: float = 1.0) -> logging.handlers.MemoryHandler:
    """Route `name` through a MemoryHandler in front of the root logger's handlers."""
    logger = logging.getLogger(name)
    targets = logging.getLogger().handlers or [logging.StreamHandler()]
    buffered = logging.handlers.MemoryHandler(capacity, flushLevel=logging.WARNING,
                                              target=_Fanout(targets), flushOnClose=True)
    logger.addHandler(buffered)
    logger.propagate = False
    stop = threading.Event()

    def flush_now_and_then() -> None:
        while not stop.wait(interval):
            buffered.flush()

    threading.Thread(target=flush_now_and_then, name="skillwarden-log-flush", daemon=True).start()
    original_close = buffered.close

    def close() -> None:
        stop.set()
        original_close()

    buffered.close = close  # type: ignore[method-assign]
    return buffered


class _Fanout(logging.Handler):
    """Hands each buffered record to the handlers the root logger had (format, level, stream)."""

    def __init__(self, handlers: list[logging.Handler]) -> None:
        super().__init__()
        self._handlers = list(handlers)

    def emit(self, record: logging.LogRecord) -> None:
        for handler in self._handlers:
            if record.levelno >= handler.level:
                handler.handle(record)
