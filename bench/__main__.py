"""Run every benchmark with its default settings: ``python -m bench`` (about 28 minutes)."""

from __future__ import annotations

import sys

from bench import (
    backtest,
    batching,
    coalescing,
    compliance,
    cycle_time,
    exchange_compliance,
    fleet_compliance,
    limiter_latency,
    priority_wait,
    reconcile,
    request_overhead,
    submission,
)

if __name__ == "__main__":
    modules = (
        limiter_latency,
        fleet_compliance,
        exchange_compliance,
        compliance,
        coalescing,
        priority_wait,
        submission,
        cycle_time,
        batching,
        reconcile,
        backtest,
        request_overhead,
    )
    for module in modules:
        print(f"\n== {module.__name__} ==", flush=True)
        sys.argv = [module.__name__]
        module.main()
