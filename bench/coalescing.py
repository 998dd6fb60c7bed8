"""Coalescing: upstream calls per logical request when 8 processes ask for the same candles.

Every round, all processes ask the ResilientAPIClient for the same BTC/USDT 1h candles at the
same instant; the sandbox counts the klines requests it received. Baseline in the same run:
the same processes with coalescing off.

Run: ``python -m bench.coalescing [--rounds 20] [--processes 8]``
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time

import redis

from bench.common import redis_for_bench
from core.config import AppConfig, SandboxConfig
from resilience import ResilientAPIClient
from sandbox.admin import admin
from sandbox.server import Sandbox
from sandbox.thread import SandboxThread


def asker(url: str, redis_url: str, coalesce: bool, rounds: int, start: float, gap: float) -> None:
    """One process: ask for the candles at the start of every round."""
    config = AppConfig.model_validate(
        {"redis": {"key_prefix": "bench-c:"}, "exchanges": {"binance": {"base_url": url}}}
    )

    async def run() -> None:
        client = ResilientAPIClient(redis.Redis.from_url(redis_url), config, coalesce=coalesce)
        try:
            for n in range(rounds):
                await asyncio.sleep(max(0.0, start + n * gap - time.time()))
                await client.resilient_request(
                    "binance",
                    "fetch_ohlcv",
                    {"symbol": "BTC/USDT", "timeframe": "1h", "limit": 100},
                )
        finally:
            await client.close()

    asyncio.run(run())


def measure(coalesce: bool, redis_url: str, args: argparse.Namespace) -> float:
    """Return upstream klines calls per logical request."""
    sandbox = SandboxThread(Sandbox(SandboxConfig(history_days=10))).start()
    ctx = multiprocessing.get_context("spawn")
    start, gap = time.time() + 3.0, 1.0
    run_args = (sandbox.url, redis_url, coalesce, args.rounds, start, gap)
    procs = [ctx.Process(target=asker, args=run_args) for _ in range(args.processes)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    calls = admin(sandbox.url, "stats")["requests_by_endpoint"].get("GET /api/v3/klines", 0)
    sandbox.stop()
    return float(calls) / args.rounds


def main() -> None:
    """Print upstream calls per logical request with and without coalescing."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--processes", type=int, default=8)
    args = parser.parse_args()
    with redis_for_bench() as url:
        ours = measure(True, url, args)
        baseline = measure(False, url, args)
        client = redis.Redis.from_url(url)
        leftovers = client.keys("bench-c:*")
        if leftovers:
            client.delete(*leftovers)
    print(f"{args.processes} processes ask for the same candles at once, {args.rounds} rounds")
    print(f"{'client':34} {'upstream calls per logical request':>36}")
    print(f"{'ours (fleet-wide coalescing)':34} {ours:36.2f}")
    print(f"{'same client, coalescing off':34} {baseline:36.2f}")


if __name__ == "__main__":
    main()
