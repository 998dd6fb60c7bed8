"""The fleet on HTX: real Redis, the HTX sandbox over HTTP, several processes."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis

from core.config import AppConfig
from ratelimit.manager import ExchangeRateLimitManager
from resilience import FallbackConfig, ResilientAPIClient
from tests.integration.lost_orders import place_with_lost_response
from tests.integration.resilience_load import fresh_after
from tests.integration.sandbox_fixtures import admin, running_sandbox

pytestmark = pytest.mark.integration
SPAWN = multiprocessing.get_context("spawn")
TICKER = "GET /market/detail/merged"
PLACE = "POST /v1/order/orders/place"
SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT", "XRP/USDT"]
#: the sandbox's market-data limit per IP and second in these tests, and the fleet's
PUBLIC_PER_1S = 20


def fleet_config(url: str, namespace: str, **exchange: Any) -> dict[str, Any]:
    return {
        "performance": {"batch_processing": {"enabled": False}},
        "redis": {"key_prefix": namespace},
        "exchanges": {
            "htx": {
                "base_url": url,
                "circuit_breaker": {"failure_threshold": 50, "recovery_timeout": 3},
                **exchange,
            }
        },
        "retry_strategies": {"default": {"max_attempts": 2, "base_delay": 0.05, "jitter": False}},
    }


def drive(
    redis_url: str,
    config: dict[str, Any],
    seconds: float,
    start_at: float,
    pause: float,
    coalesce: bool,
    out: str,
) -> None:
    """Ask for tickers (rotating symbols) until ``seconds`` pass; record each answer."""
    cfg = AppConfig.model_validate(config)

    async def run() -> list[dict[str, Any]]:
        # coalesce=False: every ask is its own upstream call, the load is what is asked
        client = ResilientAPIClient(redis.Redis.from_url(redis_url), cfg, coalesce=coalesce)
        answers: list[dict[str, Any]] = []
        while time.time() < start_at:
            await asyncio.sleep(0.005)
        # each process starts at its own symbol (its index ends the out file's name)
        deadline, n = time.time() + seconds, int(Path(out).stem.rsplit("-", 1)[-1])
        try:
            while time.time() < deadline:
                n += 1
                try:
                    answer = await client.resilient_request(
                        "htx",
                        "fetch_ticker",
                        {"symbol": SYMBOLS[n % len(SYMBOLS)]},
                        FallbackConfig(level="partial", timeout=8),
                    )
                    answers.append(
                        {"t": time.time(), "level": answer.level.name, "source": answer.source}
                    )
                except Exception as exc:  # recorded for the test to judge
                    answers.append({"t": time.time(), "error": f"{type(exc).__name__}: {exc}"})
                await asyncio.sleep(pause)
        finally:
            await client.close()
        return answers

    Path(out).write_text(json.dumps(asyncio.run(run())))


def spawn(args: tuple[Any, ...], tmp: Path, count: int) -> list[Any]:
    outs = [tmp / f"drive-{time.time_ns()}-{i}.json" for i in range(count)]
    procs = [SPAWN.Process(target=drive, args=(*args, str(o))) for o in outs]
    for p in procs:
        p.start()
    return [procs, outs]


def collect(handle: list[Any]) -> list[Any]:
    procs, outs = handle
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    return [json.loads(o.read_text()) for o in outs]


def calls(url: str, endpoint: str = TICKER) -> int:
    return int(admin(url, "stats")["requests_by_endpoint"].get(endpoint, 0))


def test_four_processes_at_twice_the_ip_limit_cause_no_violation(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    limits = {"overrides": {"public_per_1s": PUBLIC_PER_1S}}
    with running_sandbox(dialect="htx", limits=limits) as sb:
        pool = {"type": "fixed_window", "name": "PUBLIC", "limit": PUBLIC_PER_1S, "window": 1}
        config = fleet_config(sb.url, namespace, rate_limits=[pool])
        # 4 processes x 10 tickers per second: twice the 20 per second the IP may send
        seconds = 10.0
        answers = collect(
            spawn((redis_url, config, seconds, time.time() + 3, 0.1, False), tmp_path, 4)
        )
        stats = admin(sb.url, "stats")
    client = stats["clients"]["127.0.0.1"]
    assert stats["violations"] == 0 and client["limited"] == 0, (
        client["limited_at"],
        {k: v for k, v in client["used_by_window"].items() if v >= PUBLIC_PER_1S - 1},
    )
    per_second = [n for key, n in client["used_by_window"].items() if key.startswith("public:")]
    assert max(per_second) <= PUBLIC_PER_1S
    sent = stats["requests_by_endpoint"].get(TICKER, 0)
    # the fleet really pushed: most of its (reserve-reduced) budget was used
    assert sent >= 0.6 * PUBLIC_PER_1S * seconds, sent
    # each process alone would ask 10 per second: the limiter held every one back
    assert all(len(p) < 0.8 * seconds / 0.1 for p in answers), [len(p) for p in answers]
    assert all("error" not in a for p in answers for a in p[:3])


def test_an_htx_429_stops_every_process_until_the_interval_ends(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with running_sandbox(dialect="htx") as sb:
        config = fleet_config(sb.url, namespace)
        limiter = ExchangeRateLimitManager(redis_client, AppConfig.model_validate(config))
        handle = spawn((redis_url, config, 6.0, time.time() + 3.0, 0.05, True), tmp_path, 4)
        deadline = time.time() + 20
        while (before := calls(sb.url)) <= 20 and time.time() < deadline:
            time.sleep(0.05)
        admin(
            sb.url,
            "faults",
            "PUT",
            [{"kind": "http_429", "seconds": 2, "count": 1, "endpoint": TICKER}],
        )
        while not admin(sb.url, "stats")["faults_injected"]:
            time.sleep(0.01)
        told_at = time.time()
        time.sleep(0.2)
        cooling = limiter.decide("htx", TICKER, charge=False)
        during = calls(sb.url)
        time.sleep(1.2)
        still = calls(sb.url)
        answers = collect(handle)
        stats = admin(sb.url, "stats")
    kinds = Counter(a.get("source") or a.get("error", "")[:80] for p in answers for a in p)
    assert before > 20, f"the fleet was polling before the 429: {kinds}"
    assert cooling.cooldown and not cooling.allowed and 1.0 < cooling.retry_after <= 2.0
    # only requests already in flight when the 429 left may arrive while told to wait
    assert still - during <= 0 and during - before <= 5
    assert stats["clients"]["127.0.0.1"]["requests_inside_wait"] <= 4
    assert stats["violations"] == 1
    resumed = fresh_after(answers, told_at + 2.0)
    assert resumed, "polling resumed after the cooldown"


def test_a_lost_order_response_is_reconciled_by_htxs_client_order_id(
    redis_url: str, namespace: str, redis_client: redis.Redis
) -> None:
    with running_sandbox(dialect="htx") as sb:
        answer, stats, _ = place_with_lost_response(
            redis_client, sb, fleet_config(sb.url, namespace), PLACE, "cai-plan-7f3a"
        )
    assert answer.source == "reconciled"
    assert answer.data["clientOrderId"] == "cai-plan-7f3a" and answer.data["status"] == "open"
    assert stats["orders"] == {"sandbox-key": 1}
    assert stats["requests_by_endpoint"][PLACE] == 1
    assert stats["requests_by_endpoint"]["GET /v1/order/orders/getClientOrder"] >= 1
