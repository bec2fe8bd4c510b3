"""Run `skillwarden sidecar` with a candidate optimisation patched in, to measure it before
anyone changes the sidecar's code. Measurement only: never used by the product or the CI check.

    SKILLWARDEN_BENCH_EXPERIMENT=token-cache python bench/run.py --arms floor,skillwarden

Experiments:
- `token-cache`: a verified caller token is remembered (keyed by the exact token string) until
  the earlier of its `exp` and 60 s, so the ES256/RS256 signature check and the three JWT parses
  run once per token instead of once per request. A real implementation must also drop entries
  when the issuer's JWKS no longer holds the token's key (rotation).
- `switch-interval`: `sys.setswitchinterval(0.0005)` (default 5 ms), to see how much of the added
  latency is the event loop waiting for the GIL held by the sidecar's background threads.
- `cprofile`: cProfile of the event loop thread, dumped at exit (see `cprofile()`).
- `no-recording`, `no-masking`: the hook's flags are accepted but the hook is not installed —
  ablations that show what each part costs (never a headline figure: the wiring says so).
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict
from typing import Any

import jwt


def token_cache() -> None:
    from skillwarden_sidecar import identity

    original = identity.TokenVerifier.verify
    cache: OrderedDict[str, tuple[Any, float]] = OrderedDict()

    async def verify(self: Any, token: str) -> Any:
        now = time.time()
        hit = cache.get(token)
        if hit is not None and hit[1] > now:
            cache.move_to_end(token)
            return hit[0]
        verified = await original(self, token)  # raises on anything invalid: nothing cached
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp", now)
        cache[token] = (verified, min(float(exp), now + 60))
        if len(cache) > 4096:
            cache.popitem(last=False)
        return verified

    identity.TokenVerifier.verify = verify  # type: ignore[method-assign]


def switch_interval() -> None:
    """The event loop gives up the GIL in every C call that releases it (RE2 matches, hashing,
    socket and file writes); a background thread running Python (spool writer, S3 shipper) then
    keeps it for up to `sys.getswitchinterval()` (5 ms by default) before the loop gets it back.
    A shorter interval bounds that wait."""
    sys.setswitchinterval(0.0005)


def cprofile() -> None:
    """Deterministic profile of the sidecar's event loop thread, written at exit to
    $SKILLWARDEN_BENCH_PROFILE (default /tmp/skillwarden-sidecar.pstats)."""
    import atexit
    import cProfile
    import os

    profiler = cProfile.Profile()
    profiler.enable()
    atexit.register(lambda: profiler.dump_stats(os.environ.get("SKILLWARDEN_BENCH_PROFILE",
                                                               "/tmp/skillwarden-sidecar.pstats")))


def _skip_hook(module_name: str) -> None:
    """Parse the hook's flags as usual but do not install it: what the pipeline costs without it."""
    import importlib
    module = importlib.import_module(module_name)
    module.install = lambda *args, **kwargs: None  # type: ignore[attr-defined]


def gc_stats() -> None:
    """Time every garbage collection (gc.callbacks); the longest pauses per generation are
    written at exit to $SKILLWARDEN_BENCH_GC (default /tmp/skillwarden-sidecar-gc.json)."""
    import atexit
    import gc
    import json
    import os

    started: list[float] = [0.0]
    pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses[info["generation"]].append((time.perf_counter() - started[0]) * 1000)

    gc.callbacks.append(callback)

    def dump() -> None:
        out = {str(g): {"count": len(v), "max_ms": max(v, default=0.0), "total_ms": sum(v)}
               for g, v in pauses.items()}
        with open(os.environ.get("SKILLWARDEN_BENCH_GC", "/tmp/skillwarden-sidecar-gc.json"), "w") as f:
            json.dump(out, f)

    atexit.register(dump)


def gc_freeze() -> None:
    """gc.freeze() a few seconds after start-up: the objects alive then (imported modules,
    botocore's service model, compiled patterns) leave the collector's generations, so a full
    collection walks only what requests allocate."""
    import gc
    import threading

    threading.Timer(3.0, gc.freeze).start()


EXPERIMENTS = {
    "gc-stats": gc_stats, "gc-freeze": gc_freeze,
    "token-cache": token_cache, "switch-interval": switch_interval, "cprofile": cprofile,
    "no-recording": lambda: _skip_hook("skillwarden_sidecar.recording.sidecar_hook"),
    "no-masking": lambda: _skip_hook("skillwarden_sidecar.masking.sidecar_hook"),
}


def main() -> int:
    names = [n for n in sys.argv[1].split(",") if n]
    for name in names:
        EXPERIMENTS[name]()
    from skillwarden_cli.main import main as cli_main
    sys.argv = ["skillwarden", *sys.argv[2:]]
    result = cli_main()
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
