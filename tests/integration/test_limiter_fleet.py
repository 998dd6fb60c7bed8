"""The limiter under real contention: several processes, one real Redis."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from core.keys import KeySpace
from ratelimit import ExchangeRateLimitManager
from ratelimit.backends.redis import RedisBackend
from ratelimit.pools import Priority
from tests.integration.limiter_load import hammer

pytestmark = pytest.mark.integration


def _run_processes(
    redis_url: str,
    namespace: str,
    tmp_path: Path,
    pools: list[dict[str, Any]],
    count: int,
    duration: float,
    skews: list[float] | None = None,
) -> list[tuple[float, float]]:
    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 1.5  # every process starts hammering at the same moment
    procs = []
    for i in range(count):
        out = tmp_path / f"admitted-{i}.json"
        skew = (skews or [0.0] * count)[i]
        args = (redis_url, namespace, pools, duration, str(out), i, skew, start_at)
        procs.append((ctx.Process(target=hammer, args=args), out))
    for proc, _ in procs:
        proc.start()
    for proc, _ in procs:
        proc.join(60)
        assert proc.exitcode == 0
    admitted: list[tuple[float, float]] = []
    for _, out in procs:
        admitted += [tuple(x) for x in json.loads(out.read_text())]  # type: ignore[misc]
    return sorted(admitted)


def _fixed_window_totals(admitted: list[tuple[float, float]], window: float) -> dict[int, float]:
    totals: dict[int, float] = {}
    for at, weight in admitted:
        totals[int(at // window)] = totals.get(int(at // window), 0) + weight
    return totals


def test_fixed_window_never_over_admits_across_processes(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    pool = {"name": "w", "algorithm": "fixed_window", "limit": 40, "window": 0.5}
    admitted = _run_processes(redis_url, namespace, tmp_path, [pool], count=4, duration=3.0)
    totals = _fixed_window_totals(admitted, 0.5)
    assert len(totals) >= 5
    assert max(totals.values()) <= 40, totals
    full = sorted(totals.values())[1:-1]  # the first and last windows are partial
    assert min(full) >= 37, f"windows left budget unused under 4x contention: {totals}"


def test_sliding_window_never_over_admits_in_any_interval(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    pool = {"name": "s", "algorithm": "sliding_window", "limit": 30, "window": 0.5}
    admitted = _run_processes(redis_url, namespace, tmp_path, [pool], count=4, duration=2.5)
    assert len(admitted) > 50
    for i, (at, _) in enumerate(admitted):
        in_window = sum(w for t, w in admitted[: i + 1] if t > at - 0.5)
        assert in_window <= 30, f"{in_window} admitted in the 0.5 s ending at {at}"


def test_linked_pools_hold_together_under_contention(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    pools = [
        {"name": "fast", "algorithm": "fixed_window", "limit": 20, "window": 0.25},
        {"name": "slow", "algorithm": "fixed_window", "limit": 50, "window": 1.0},
    ]
    admitted = _run_processes(redis_url, namespace, tmp_path, pools, count=3, duration=2.5)
    assert max(_fixed_window_totals(admitted, 0.25).values()) <= 20
    assert max(_fixed_window_totals(admitted, 1.0).values()) <= 50


def test_a_process_with_a_skewed_clock_cannot_over_admit(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    pool = {"name": "w", "algorithm": "fixed_window", "limit": 30, "window": 0.5}
    admitted = _run_processes(
        redis_url,
        namespace,
        tmp_path,
        [pool],
        count=3,
        duration=2.5,
        skews=[0.0, 3600.0, -7200.25],
    )
    totals = _fixed_window_totals(admitted, 0.5)
    assert max(totals.values()) <= 30, totals
    server_now = float(redis_client.time()[0])
    assert all(abs(at - server_now) < 60 for at, _ in admitted), "times came from a client"


def test_no_process_is_admitted_during_a_cooldown(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    ctx = multiprocessing.get_context("spawn")
    pool = {"name": "w", "algorithm": "token_bucket", "limit": 1000, "rate": 1000}
    start_at = time.time() + 1.5
    procs = [
        ctx.Process(
            target=hammer,
            args=(
                redis_url,
                namespace,
                [pool],
                4.0,
                str(tmp_path / f"a{i}.json"),
                i,
                0.0,
                start_at,
            ),
        )
        for i in range(4)
    ]
    for proc in procs:
        proc.start()
    time.sleep(max(0.0, start_at - time.time()) + 1.0)
    backend = RedisBackend(redis_client, KeySpace(namespace))
    backend.cooldown("load", 1.5, None, "http 429")
    seconds, micros = redis_client.time()
    cooldown_from = seconds + micros / 1e6
    for proc in procs:
        proc.join(60)
    admitted = sorted(
        a for i in range(4) for a in json.loads((tmp_path / f"a{i}.json").read_text())
    )
    during = [at for at, _ in admitted if cooldown_from <= at < cooldown_from + 1.45]
    assert during == []
    assert any(at < cooldown_from for at, _ in admitted)
    assert any(at >= cooldown_from + 1.5 for at, _ in admitted), "polling never resumed"


def test_manager_on_real_redis_shares_one_budget_between_instances(
    redis_url: str, namespace: str, redis_client: redis.Redis
) -> None:
    from core.config import AppConfig

    config = AppConfig.model_validate(
        {"redis": {"key_prefix": namespace}, "exchanges": {"kraken": {}}}
    )
    first = ExchangeRateLimitManager(redis.Redis.from_url(redis_url), config)
    second = ExchangeRateLimitManager(redis.Redis.from_url(redis_url), config)
    # Kraken's private counter: 15 x 0.9 margin = 13.5; medium leaves 20% for high: 10.8
    taken = 0
    for manager in [first, second] * 10:
        if manager.decide("kraken", "private").allowed:
            taken += 1
    assert taken == 10
    assert not second.decide("kraken", "private").allowed
    assert first.decide("kraken", "order", priority=Priority.HIGH).allowed, "reserve for orders"


def test_an_unreachable_redis_is_a_clear_error_and_orders_fail_closed() -> None:
    import socket

    from core.errors import LimiterUnavailableError

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = redis.Redis(port=port, socket_connect_timeout=0.5)
    manager = ExchangeRateLimitManager(client)
    with pytest.raises(LimiterUnavailableError, match="rate limiter Redis unreachable"):
        manager.decide("binance", "POST /api/v3/order", priority="high")
    assert manager.decide("binance", "GET /api/v3/klines").allowed, "market data: local share"
