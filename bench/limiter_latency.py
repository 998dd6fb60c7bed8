"""Decision latency and throughput of the Redis limiter, against two baselines on one Redis.

Baselines, measured in the same run on the same server and client library:
- ``raw EVALSHA``: a trivial script (``return 1``), the floor of any Lua-based limiter;
- ``limits moving window``: the ``limits`` library's MovingWindowRateLimiter.hit().

Run: ``python -m bench.limiter_latency [--n 20000]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import redis
from limits import RateLimitItemPerMinute
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

from bench.common import percentile, redis_for_bench
from core.keys import KeySpace
from ratelimit.backend import Charge
from ratelimit.backends.redis import RedisBackend
from ratelimit.pools import PoolSpec, Priority
from ratelimit.tables import BINANCE, scope_weights


def measure(name: str, call: Callable[[], object], n: int) -> dict[str, float]:
    """Time ``n`` sequential calls; return p50/p99 in ms and calls per second."""
    for _ in range(min(500, n)):
        call()
    samples = []
    start = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    return {
        "name": name,
        "p50_ms": percentile(samples, 50) * 1e3,  # type: ignore[dict-item]
        "p99_ms": percentile(samples, 99) * 1e3,
        "per_s": n / total,
    }


def run(n: int) -> list[dict[str, float]]:
    """Measure every contender; return their rows (the first is the floor)."""
    with redis_for_bench() as url:
        client = redis.Redis.from_url(url)
        client.flushdb()
        trivial = client.register_script("return 1")
        backend = RedisBackend(client, KeySpace("bench:"))
        huge = 1e12  # never deny: measure the admitting path
        bucket = [Charge(PoolSpec("tb", "token_bucket", huge, rate=huge), 1)]
        sliding = [Charge(PoolSpec("sw", "sliding_window", huge, window=0.05), 1)]
        order = scope_weights(BINANCE, "POST /api/v3/order")
        binance = []
        for name, weight in order.items():
            pool = BINANCE.pool(name)
            binance.append(
                Charge(PoolSpec(name, pool.algorithm, huge, pool.window, pool.rate), weight)
            )
        moving = MovingWindowRateLimiter(RedisStorage(url))
        item = RateLimitItemPerMinute(10**9)
        rows = [
            measure("raw EVALSHA (floor)", lambda: trivial(keys=["bench:x"], args=[]), n),
            measure(
                "ours: token bucket, 1 pool", lambda: backend.decide("b", bucket, Priority.LOW), n
            ),
            measure(
                "ours: sliding window, 1 pool",
                lambda: backend.decide("b", sliding, Priority.LOW),
                n,
            ),
            measure(
                "ours: Binance order, 4 linked pools",
                lambda: backend.decide("b", binance, Priority.HIGH),
                n,
            ),
            measure("limits: moving window hit()", lambda: moving.hit(item, "bench"), n),
        ]
        client.flushdb()
        return rows


def main() -> None:
    """Print the table with each row's rate as a share of the raw EVALSHA floor."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20000)
    rows = run(parser.parse_args().n)
    floor = rows[0]["per_s"]
    print(f"{'contender':40} {'p50 ms':>8} {'p99 ms':>8} {'decisions/s':>12} {'vs EVALSHA':>11}")
    for row in rows:
        print(
            f"{row['name']:40} {row['p50_ms']:8.3f} {row['p99_ms']:8.3f} "
            f"{row['per_s']:12.0f} {row['per_s'] / floor:10.0%}"
        )


if __name__ == "__main__":
    main()
