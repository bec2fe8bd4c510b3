"""Run `skillwarden sidecar` with a candidate optimisation patched in, to measure it before
anyone changes the sidecar's code. Measurement only: never used by the product or the CI check.

    SKILLWARDEN_BENCH_EXPERIMENT=token-cache python bench/run.py --arms floor,skillwarden

Experiments:
- `token-cache`: a verified caller token is remembered (keyed by the exact token string) until
  the earlier of its `exp` and 60 s, so the ES256/RS256 signature check and the three JWT parses
  run once per token instead of once per request. A real implementation must also drop entries
  when the issuer's JWKS no longer holds the token's key (rotation).
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


EXPERIMENTS = {"token-cache": token_cache}


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
