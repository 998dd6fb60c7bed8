"""Run every benchmark with its default settings: ``python -m bench`` (about 3 minutes)."""

from __future__ import annotations

import sys

from bench import fleet_compliance, limiter_latency

if __name__ == "__main__":
    for module in (limiter_latency, fleet_compliance):
        print(f"\n== {module.__name__} ==", flush=True)
        sys.argv = [module.__name__]
        module.main()
