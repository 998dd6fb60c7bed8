"""Run every benchmark with its default settings: ``python -m bench`` (about 7 minutes)."""

from __future__ import annotations

import sys

from bench import coalescing, exchange_compliance, fleet_compliance, limiter_latency

if __name__ == "__main__":
    for module in (limiter_latency, fleet_compliance, exchange_compliance, coalescing):
        print(f"\n== {module.__name__} ==", flush=True)
        sys.argv = [module.__name__]
        module.main()
