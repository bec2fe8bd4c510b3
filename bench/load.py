"""Load generators: `wrk` for throughput, an aiohttp client for streaming time-to-first-token.

Both run on the generator core (core 0), never on the core of the system under test.
`wrk` (C, epoll) costs ~10 µs of CPU per request against ~73 µs for an aiohttp client loop
(uvloop; both measured against the fake upstream at c=16, docs/performance.md), so wrk drives
the throughput arms and the Python client only measures streaming latency at modest rates, where
its own cost does not saturate core 0.
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

GENERATOR_CORE = 0


# Read at import, before run.py pins the bench process itself to the generator core.
_CORES = frozenset(os.sched_getaffinity(0))


def pinned(core: int) -> list[str]:
    """`taskset -c <core>` when the machine lets us use that core and another; nothing on a
    1-core box (ratios stay comparable, the doc says pinning is what makes them clean)."""
    return ["taskset", "-c", str(core)] if core in _CORES and len(_CORES) >= 2 else []


def lua_string(value: str) -> str:
    # Lua long brackets need no escaping as long as the closing bracket does not occur.
    level = 0
    while f"]{'=' * level}]" in value:
        level += 1
    eq = "=" * level
    return f"[{eq}[{value}]{eq}]"


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    non_2xx: int
    generator_cpu_s: float
    statuses: dict[str, int] = field(default_factory=dict)
    first_error_body: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _duration_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"unparsable wrk duration {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str, generator_cpu_s: float) -> WrkResult:
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    if not total:
        raise RuntimeError(f"wrk printed no totals:\n{output}")
    percent = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", output, re.M))
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    seconds = _duration_ms(total.group(2) + total.group(3)) / 1000.0
    requests = int(total.group(1))
    return WrkResult(
        requests=requests, seconds=seconds, rps=requests / seconds if seconds else 0.0,
        p50_ms=_duration_ms(percent["50"]) if "50" in percent else float("nan"),
        p99_ms=_duration_ms(percent["99"]) if "99" in percent else float("nan"),
        # wrk counts a "read error" for every keep-alive connection it closes itself at the end
        # when the server speaks first; only timeouts and connect failures are real errors here.
        errors=sum(int(socket.group(i)) for i in (1, 4)) if socket else 0,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        generator_cpu_s=generator_cpu_s,
        statuses={code: int(count) for code, count in re.findall(r"^STATUS (\d+) (\d+)$", output, re.M)},
        first_error_body=(re.findall(r"^FIRSTBODY (.*)$", output, re.M) or [""])[0],
    )


# Which non-2xx statuses came back, and the first such body: a fast error path is not throughput,
# and the reason (e.g. a fail-closed policy timeout) belongs in the results.
STATUS_LUA = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {}; first_body = "" end
function response(status, headers, body)
  if status >= 300 then
    statuses[status] = (statuses[status] or 0) + 1
    if first_body == "" then first_body = string.sub(body, 1, 300) end
  end
end
function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    for code, count in pairs(t:get("statuses")) do io.write(string.format("STATUS %d %d\\n", code, count)) end
    local b = t:get("first_body")
    if b ~= "" then io.write("FIRSTBODY " .. string.gsub(b, "\\n", " ") .. "\\n") end
  end
end
"""


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk is not installed: apt-get install wrk (Debian package)")
    return found


def run_wrk(url: str, body: bytes, headers: dict[str, str], connections: int, seconds: float,
            timeout_s: float = 10.0) -> WrkResult:
    lines = ['wrk.method = "POST"', f"wrk.body = {lua_string(body.decode())}"]
    lines += [f"wrk.headers[ {lua_string(k)} ] = {lua_string(v)}" for k, v in headers.items()]
    lines.append(STATUS_LUA)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write("\n".join(lines) + "\n")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        done = subprocess.run(
            [*pinned(GENERATOR_CORE), wrk_binary(), "-t1", f"-c{connections}",
             # wrk takes whole seconds only
             f"-d{max(1, round(seconds))}s", f"--timeout={max(1, round(timeout_s))}s", "--latency",
             "-s", script.name, url],
            capture_output=True, text=True, check=True, timeout=seconds + 30,
        )
    finally:
        Path(script.name).unlink()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return parse_wrk(done.stdout, cpu)


@dataclass
class StreamResult:
    streams: int = 0
    errors: int = 0
    events: int = 0
    ttft_ms: list[float] = field(default_factory=list)
    total_ms: list[float] = field(default_factory=list)
    first_error: str = ""


async def _one_stream(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str],
                      result: StreamResult) -> None:
    started = time.perf_counter()
    first: float | None = None
    try:
        async with session.post(url, data=body, headers=headers) as response:
            if response.status != 200:
                result.errors += 1
                result.first_error = result.first_error or f"HTTP {response.status}: {await response.text()}"
                return
            async for data in response.content.iter_any():
                if first is None and b"content_block_delta" in data:
                    first = time.perf_counter()
                result.events += data.count(b"event: content_block_delta")
    except (TimeoutError, aiohttp.ClientError) as error:
        result.errors += 1
        result.first_error = result.first_error or repr(error)
        return
    if first is None:
        result.errors += 1
        result.first_error = result.first_error or "stream ended without a content_block_delta"
        return
    result.streams += 1
    result.ttft_ms.append((first - started) * 1000)
    result.total_ms.append((time.perf_counter() - started) * 1000)


async def run_streams(url: str, body: bytes, headers: dict[str, str], concurrency: int,
                      seconds: float, min_streams: int = 0) -> StreamResult:
    """`concurrency` closed-loop workers open streams back to back for `seconds`
    (and until each worker has done its share of `min_streams`)."""
    result = StreamResult()
    deadline = time.perf_counter() + seconds
    share = -(-min_streams // concurrency) if min_streams else 0
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async def worker() -> None:
            done = 0
            while time.perf_counter() < deadline or done < share:
                await _one_stream(session, url, body, headers, result)
                done += 1
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return result


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]
