"""Access lines are batched: written within the interval, at once for warnings and on close."""

from __future__ import annotations

import io
import logging
import time

from skillwarden_sidecar.logbuffer import buffer_logger


def test_lines_are_written_late_but_written() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    saved = root.handlers[:]
    root.handlers[:] = [handler]
    try:
        buffered = buffer_logger("skillwarden.test.access", capacity=100, interval=0.2)
        logger = logging.getLogger("skillwarden.test.access")
        logger.setLevel(logging.INFO)
        logger.info("request_id=1 status=200")
        assert stream.getvalue() == ""  # not one write per line
        deadline = time.monotonic() + 2
        while "request_id=1" not in stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "skillwarden.test.access request_id=1 status=200" in stream.getvalue()
        logger.warning("upstream refused")  # warnings do not wait
        assert "upstream refused" in stream.getvalue()
        logger.info("request_id=2 status=200")
        buffered.close()  # shutdown flushes what is left
        assert "request_id=2" in stream.getvalue()
    finally:
        root.handlers[:] = saved
        logging.getLogger("skillwarden.test.access").handlers.clear()
