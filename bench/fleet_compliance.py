"""Fleet compliance: 8 processes share one exchange budget with demand at twice that budget.

The budget is a Binance-style fixed window (REQUEST_WEIGHT), scaled down to ``--limit``
weight per ``--window`` seconds so that a minute of measurement covers many windows. Each
process offers requests (weights 1 and 2) at ``2 x budget / processes`` per second.

- ours: every process asks the shared Redis limiter (``acquire``, blocking on retry_after);
- baseline, ccxt's built-in limiter: every process throttles itself with ccxt's own
  ``Throttler`` configured for the exchange's whole budget, as N ccxt instances would.

Per window, the weight the fleet got through is compared with the limit: the share of the
limit used (mean over full windows) and the number of windows over the limit.

Run: ``python -m bench.fleet_compliance [--seconds 60] [--processes 8]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import tempfile
import time
from pathlib import Path

import redis

from bench.common import redis_for_bench
from core.keys import KeySpace
from ratelimit.backend import Charge
from ratelimit.backends.redis import RedisBackend
from ratelimit.pools import PoolSpec, Priority


def _offered(seed: int, rate: float, seconds: float, start: float) -> list[tuple[float, int]]:
    rng = random.Random(seed)
    t, out = start, []
    while t < start + seconds:
        weight = rng.choice([1, 2])
        out.append((t, weight))
        t += weight / rate
    return out


def ours(
    url: str,
    limit: float,
    window: float,
    rate: float,
    seconds: float,
    start: float,
    seed: int,
    out: str,
) -> None:
    """One fleet process using the shared limiter."""
    backend = RedisBackend(redis.Redis.from_url(url), KeySpace("bench:"))
    pool = PoolSpec("REQUEST_WEIGHT", "fixed_window", limit, window=window)
    admitted = []
    for due, weight in _offered(seed, rate, seconds, start):
        time.sleep(max(0.0, due - time.time()))
        while True:
            result = backend.decide("fleet", [Charge(pool, weight)], Priority.MEDIUM)
            if result.allowed:
                admitted.append((result.at, weight))
                break
            if time.time() > start + seconds:
                break
            time.sleep(result.retry_after + 0.0005)
        if time.time() > start + seconds:
            break
    Path(out).write_text(json.dumps(admitted))


def ccxt_baseline(
    url: str,
    limit: float,
    window: float,
    rate: float,
    seconds: float,
    start: float,
    seed: int,
    out: str,
) -> None:
    """One fleet process using ccxt's per-process Throttler for the whole budget."""
    from ccxt.async_support.base.throttler import Throttler

    async def run() -> list[tuple[float, int]]:
        throttler = Throttler(
            {"refillRate": limit / window / 1000.0, "capacity": 1.0, "delay": 0.001}
        )
        admitted = []
        for due, weight in _offered(seed, rate, seconds, start):
            await asyncio.sleep(max(0.0, due - time.time()))
            await throttler(weight)
            if time.time() > start + seconds:
                break
            admitted.append((time.time(), weight))
        return admitted

    Path(out).write_text(json.dumps(asyncio.run(run())))


def measure(target: object, url: str, args: argparse.Namespace) -> dict[str, float]:
    """Run ``processes`` copies of ``target``; return compliance figures per window."""
    ctx = multiprocessing.get_context("spawn")
    start = (int(time.time() / args.window) + 3) * args.window  # on a window boundary
    rate = 2 * args.limit / args.window / args.processes
    with tempfile.TemporaryDirectory() as tmp:
        outs = [str(Path(tmp) / f"{i}.json") for i in range(args.processes)]
        procs = []
        for i in range(args.processes):
            run_args = (url, args.limit, args.window, rate, args.seconds, start, i, outs[i])
            procs.append(ctx.Process(target=target, args=run_args))  # type: ignore[arg-type]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        admitted = [tuple(a) for o in outs for a in json.loads(Path(o).read_text())]
    totals: dict[int, float] = {}
    for at, weight in admitted:
        totals[int(at // args.window)] = totals.get(int(at // args.window), 0) + weight
    first, last = int(start // args.window), int((start + args.seconds) // args.window) - 1
    full = [totals.get(w, 0.0) for w in range(first, last)]
    return {
        "windows": len(full),
        "used_share": sum(full) / (len(full) * args.limit),
        "min_share": min(full) / args.limit,
        "over": sum(1 for t in full if t > args.limit),
        "worst": max(full) / args.limit,
    }


def main() -> None:
    """Measure ours and the ccxt baseline in one run and print both."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--limit", type=float, default=200, help="weight per window")
    parser.add_argument("--window", type=float, default=1.0, help="window in seconds")
    args = parser.parse_args()
    with redis_for_bench() as url:
        rows = {
            "ours (shared Redis limiter)": measure(ours, url, args),
            "ccxt built-in limiter (per process)": measure(ccxt_baseline, url, args),
        }
        client = redis.Redis.from_url(url)
        leftovers = client.keys("bench:*")
        if leftovers:
            client.delete(*leftovers)
    print(
        f"{args.processes} processes, demand 2x budget, {args.limit:g} weight per "
        f"{args.window:g} s window, {args.seconds:g} s each"
    )
    print(f"{'limiter':38} {'windows':>7} {'used':>7} {'min':>7} {'worst':>7} {'over':>5}")
    for name, r in rows.items():
        print(
            f"{name:38} {r['windows']:7.0f} {r['used_share']:7.1%} {r['min_share']:7.1%} "
            f"{r['worst']:7.1%} {r['over']:5.0f}"
        )


if __name__ == "__main__":
    main()
