"""The benchmark's own arithmetic: what wrk printed, what the Lua hook saw, how rounds summarise.
A wrong parse here would put a wrong number in docs/performance.md."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))

import load
import run

WRK_OUTPUT = """Running 2s test @ http://127.0.0.1:1/v1/messages
  1 threads and 16 connections
  Latency Distribution
     50%    2.42ms
     75%    2.93ms
     90%    3.89ms
     99%    1.20s
  12000 requests in 2.00s, 2.88MB read
  Socket errors: connect 0, read 16, write 0, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:   6000.00
STATUS 503 7
FIRSTBODY {"type":"error","error":{"message":"policy engine did not answer in time"}}
"""


def test_wrk_output_is_parsed_with_units_statuses_and_real_errors_only() -> None:
    result = load.parse_wrk(WRK_OUTPUT, generator_cpu_s=0.5)
    assert result.requests == 12000 and result.seconds == 2.0 and result.rps == 6000.0
    assert result.p50_ms == 2.42 and result.p99_ms == 1200.0  # seconds converted to ms
    # Read errors are wrk closing its own keep-alive connections; timeouts are real.
    assert result.errors == 3
    assert result.non_2xx == 7 and result.statuses == {"503": 7}
    assert "policy engine" in result.first_error_body


def test_wrk_output_without_totals_is_an_error_not_a_zero() -> None:
    with pytest.raises(RuntimeError, match="no totals"):
        load.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n", 0.0)


@pytest.mark.parametrize("text", ["plain", "has ]] inside", "has ]=] and ]] both", ""])
def test_lua_long_strings_never_close_early(text: str) -> None:
    quoted = load.lua_string(text)
    level = quoted.index("[", 1)  # "[" + "=" * n + "["
    closing = "]" + "=" * (level - 1) + "]"
    assert quoted.endswith(closing) and quoted[level + 1:-len(closing)] == text
    assert closing not in text


def test_percentile_is_nearest_rank_and_nan_when_empty() -> None:
    values = [float(v) for v in range(1, 101)]
    assert load.percentile(values, 50) == 51.0  # rank round(0.5 * 99) = 50 (0-based)
    assert load.percentile(values, 99) == 99.0
    assert load.percentile([], 50) != load.percentile([], 50)  # NaN


def test_summary_takes_medians_of_rounds_and_subtracts_direct_in_the_same_run() -> None:
    def row(rps: float, p50: float, cpu: float | None) -> dict[str, object]:
        out: dict[str, object] = {"rps": rps, "p50_ms": p50, "p99_ms": p50 * 2}
        if cpu is not None:
            out["cpu_ms_per_request"] = cpu
        return out

    rounds = [{"direct": {"nonstream_c1": row(1000, 0.1, None), "nonstream_c16": row(9000, 1, None)},
               "floor": {"nonstream_c1": row(500, 0.5, 0.2), "nonstream_c16": row(r, 2, c)}}
              for r, c in ((4000, 0.25), (6000, 0.2), (5000, 0.3))]
    summary = run.summarise(rounds, ["direct", "floor"])
    assert summary["floor"]["rps_c16"] == 5000  # median, not mean or best
    assert summary["floor"]["cpu_ms_per_request_c16"] == 0.25
    assert summary["floor"]["added_p50_ms_c1"] == pytest.approx(0.4)
    summary["skillwarden"] = {"cpu_ms_per_request_c16": 2.5, "rps_c16": 500}
    ratios = run.ratios(summary)
    assert summary["floor"]["capacity_rps_per_core"] == pytest.approx(4000)
    assert ratios["skillwarden/floor capacity per core (CPU ms/request)"] == pytest.approx(0.1)
    assert ratios["skillwarden/floor rps_c16"] == pytest.approx(0.1)
