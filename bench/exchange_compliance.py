"""8 processes poll market data through ccxt at twice the budget, against the sandbox.

The sandbox enforces Binance's REQUEST_WEIGHT (scaled to ``--limit`` per ``--window`` s) and
counts what it received. Two runs, each on a fresh sandbox, in one invocation:

- ours: each process's ccxt instance is admitted by the fleet-wide Redis limiter (the limit
  set to ``--margin`` below the sandbox's, to absorb requests in flight across a window edge);
- baseline, ccxt's built-in limiter: each process's ccxt throttles itself (enableRateLimit),
  as N independent ccxt instances do.

Printed: 429s and 418s the sandbox sent, and the weight it served per full window as a share
of its limit.

Run: ``python -m bench.exchange_compliance [--seconds 60] [--processes 8]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import time
from typing import Any

import redis

from bench.common import redis_for_bench
from core.config import AppConfig, SandboxConfig
from exchanges.ccxt_factory import make_exchange
from ratelimit.manager import ExchangeRateLimitManager
from sandbox.admin import admin
from sandbox.server import Sandbox
from sandbox.thread import SandboxThread

CALLS = [  # (method, kwargs, Binance weight)
    ("fetch_ohlcv", {"symbol": "BTC/USDT", "timeframe": "1m", "limit": 100}, 2),
    ("fetch_ticker", {"symbol": "ETH/USDT"}, 2),
    ("fetch_order_book", {"symbol": "SOL/USDT", "limit": 100}, 5),
]


def _config(url: str, limit: float, window: float, prefix: str) -> AppConfig:
    return AppConfig.model_validate(
        {
            "redis": {"key_prefix": prefix},
            "exchanges": {
                "binance": {
                    "base_url": url,
                    "rate_limits": [
                        {
                            "type": "fixed_window",
                            "name": "REQUEST_WEIGHT",
                            "limit": limit,
                            "window": window,
                        },
                    ],
                }
            },
            "rate_limiting": {"high_priority_reserve": 0.0, "max_wait": 120},
        }
    )


def poller(
    url: str,
    redis_url: str | None,
    limit: float,
    window: float,
    rate: float,
    seconds: float,
    start_at: float,
    index: int,
) -> None:
    """One fleet process: offer ``rate`` weight per second for ``seconds``."""

    async def run() -> None:
        config = _config(url, limit, window, "bench-x:")
        if redis_url:
            limiter = ExchangeRateLimitManager(redis.Redis.from_url(redis_url), config)
            ex = make_exchange(
                "binance", config.exchanges["binance"], limiter=limiter, max_wait=120
            )
        else:
            ex = make_exchange("binance", config.exchanges["binance"], enableRateLimit=True)
        await ex.load_markets()
        while time.time() < start_at:
            await asyncio.sleep(0.005)
        due, n = start_at, index
        try:
            while time.time() < start_at + seconds:
                method, kwargs, weight = CALLS[n % len(CALLS)]
                n += 1
                await asyncio.sleep(max(0.0, due - time.time()))
                due += weight / rate
                with contextlib.suppress(Exception):  # the sandbox counts what happened
                    await getattr(ex, method)(**kwargs)
        finally:
            await ex.close()

    asyncio.run(run())


def measure(redis_url: str | None, args: argparse.Namespace) -> dict[str, float]:
    """Run the fleet against a fresh sandbox; return what the sandbox saw."""
    scale = args.window / 60
    settings = SandboxConfig.model_validate(
        {
            "history_days": 1,
            "limits": {"request_weight_per_minute": args.limit, "time_scale": scale},
        }
    )
    sandbox = SandboxThread(Sandbox(settings)).start()
    ctx = multiprocessing.get_context("spawn")
    start = (int(time.time() / args.window) + 4) * args.window
    ours_limit = args.limit * (1 - args.margin)
    rate = 2 * args.limit / args.window / args.processes
    procs = [
        ctx.Process(
            target=poller,
            args=(sandbox.url, redis_url, ours_limit, args.window, rate, args.seconds, start, i),
        )
        for i in range(args.processes)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    client = admin(sandbox.url, "stats")["clients"].get("127.0.0.1", {})
    sandbox.stop()
    windows = {float(k): v for k, v in client.get("weight_by_window", {}).items()}
    full = [windows.get(w, 0.0) for w in _full_windows(start, args)]
    return {
        "429": client.get("sent_429", 0),
        "418": client.get("sent_418", 0),
        "used": sum(full) / (len(full) * args.limit) if full else 0.0,
        "min": min(full) / args.limit if full else 0.0,
        "windows": len(full),
    }


def _full_windows(start: float, args: argparse.Namespace) -> list[float]:
    count = int(args.seconds / args.window)
    return [start + i * args.window for i in range(1, count - 1)]


def main() -> None:
    """Measure ours and ccxt's built-in limiter against the sandbox; print both."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--limit", type=float, default=1200, help="sandbox weight per window")
    parser.add_argument("--window", type=float, default=6.0, help="window in seconds")
    parser.add_argument("--margin", type=float, default=0.03, help="our limit below the sandbox's")
    args = parser.parse_args()
    with redis_for_bench() as url:
        rows: dict[str, Any] = {"ours (fleet limiter in ccxt's request path)": measure(url, args)}
        client = redis.Redis.from_url(url)
        leftovers = client.keys("bench-x:*")
        if leftovers:
            client.delete(*leftovers)
    rows["ccxt built-in limiter (per process)"] = measure(None, args)
    print(
        f"{args.processes} processes, demand 2x budget, sandbox limit {args.limit:g} weight per "
        f"{args.window:g} s, {args.seconds:g} s each"
    )
    print(f"{'limiter':46} {'429s':>5} {'418s':>5} {'used':>7} {'min':>7} {'windows':>7}")
    for name, r in rows.items():
        print(
            f"{name:46} {r['429']:5.0f} {r['418']:5.0f} {r['used']:7.1%} {r['min']:7.1%} "
            f"{r['windows']:7.0f}"
        )


if __name__ == "__main__":
    main()
