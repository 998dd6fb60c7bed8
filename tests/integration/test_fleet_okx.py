"""The fleet on OKX: real Redis, the OKX sandbox over HTTP, several processes."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from core.config import AppConfig
from exchanges.ccxt_factory import make_exchange
from ratelimit.manager import ExchangeRateLimitManager
from resilience import FallbackConfig, ResilientAPIClient
from tests.integration.lost_orders import place_with_lost_response
from tests.integration.resilience_load import fresh_after
from tests.integration.sandbox_fixtures import admin, running_sandbox

pytestmark = pytest.mark.integration
SPAWN = multiprocessing.get_context("spawn")
TICKER = "GET /api/v5/market/ticker"
PLACE = "POST /api/v5/trade/order"
DETAILS = "GET /api/v5/trade/order"
SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT", "XRP/USDT"]
#: the sandbox's ticker budget per IP and 2 s in these tests, and the fleet's: below the
#: fleet's generic public pool (9 per 2 s), so a request the fleet priced under the wrong
#: scope would overrun it
TICKER_PER_2S = 6
PAUSE = 0.6


def fleet_config(url: str, namespace: str, **exchange: Any) -> dict[str, Any]:
    return {
        "performance": {"batch_processing": {"enabled": False}},
        "redis": {"key_prefix": namespace},
        "exchanges": {
            "okx": {
                "base_url": url,
                "circuit_breaker": {"failure_threshold": 50, "recovery_timeout": 3},
                **exchange,
            }
        },
        "retry_strategies": {"default": {"max_attempts": 2, "base_delay": 0.05, "jitter": False}},
    }


def drive(
    redis_url: str, config: dict[str, Any], seconds: float, go: str, pause: float, out: str
) -> None:
    """Say ready, wait for the start time written to ``go``, then ask for tickers (rotating
    symbols) until ``seconds`` pass; record each answer."""
    cfg = AppConfig.model_validate(config)

    async def run() -> list[dict[str, Any]]:
        client = ResilientAPIClient(redis.Redis.from_url(redis_url), cfg)
        answers: list[dict[str, Any]] = []
        Path(out + ".ready").touch()
        while not Path(go).exists() or not Path(go).read_text():
            await asyncio.sleep(0.005)
        start_at = float(Path(go).read_text())
        while time.time() < start_at:
            await asyncio.sleep(0.005)
        deadline, n = time.time() + seconds, int(out[-6]) if out[-6].isdigit() else 0
        try:
            while time.time() < deadline:
                n += 1
                try:
                    answer = await client.resilient_request(
                        "okx",
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


def spawn(
    redis_url: str, config: dict[str, Any], seconds: float, pause: float, tmp: Path, count: int
) -> list[Any]:
    """Start ``count`` drivers; return once every one is ready and told to start now."""
    go = tmp / f"go-{time.time_ns()}"
    outs = [tmp / f"drive-{time.time_ns()}-{i}.json" for i in range(count)]
    args = (redis_url, config, seconds, str(go), pause)
    procs = [SPAWN.Process(target=drive, args=(*args, str(o))) for o in outs]
    for p in procs:
        p.start()
    deadline = time.time() + 60  # spawned interpreters import the fleet: slow on a busy host
    while not all(Path(f"{o}.ready").exists() for o in outs) and time.time() < deadline:
        time.sleep(0.02)
    go.write_text(str(time.time() + 0.2))
    return [procs, outs]


def collect(handle: list[Any]) -> list[Any]:
    procs, outs = handle
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    return [json.loads(o.read_text()) for o in outs]


def test_four_processes_at_twice_the_ticker_limit_cause_no_violation(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    limits = {"overrides": {"market_ticker_per_2s": TICKER_PER_2S}}
    with running_sandbox(dialect="okx", limits=limits) as sb:
        pool = {"type": "sliding_window", "name": "MARKET_TICKER", "limit": TICKER_PER_2S}
        config = fleet_config(sb.url, namespace, rate_limits=[{**pool, "window": 2}])
        # 4 processes x 1.7 tickers per second: over twice the 6 per 2 s the IP may send
        seconds = 10.0
        answers = collect(spawn(redis_url, config, seconds, PAUSE, tmp_path, 4))
        stats = admin(sb.url, "stats")
    client = stats["clients"]["127.0.0.1"]
    assert stats["violations"] == 0 and client["sent_429"] == 0, client
    sent = stats["requests_by_endpoint"].get(TICKER, 0)
    # the fleet really pushed: most of its (reserve-reduced) budget was used
    assert sent >= 0.6 * TICKER_PER_2S / 2 * seconds, sent
    asked = sum(len(p) for p in answers)
    # they asked at twice the budget: the limiter held them back (each waits its turn)
    assert asked < 0.75 * 4 * seconds / PAUSE, asked
    assert all("error" not in a for p in answers for a in p[:3])


def test_an_okx_429_stops_every_process_for_one_window(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with running_sandbox(dialect="okx") as sb:
        config = fleet_config(sb.url, namespace)
        limiter = ExchangeRateLimitManager(redis_client, AppConfig.model_validate(config))
        # 4 x 4 per second: inside the fleet's ticker budget (20 per 2 s less its margin)
        handle = spawn(redis_url, config, 6.0, 0.25, tmp_path, 4)
        time.sleep(2.5)
        before = admin(sb.url, "stats")["requests_by_endpoint"].get(TICKER, 0)
        admin(sb.url, "faults", "PUT", [{"kind": "http_429", "count": 1, "endpoint": TICKER}])
        while not admin(sb.url, "stats")["faults_injected"]:
            time.sleep(0.01)
        told_at = time.time()
        time.sleep(0.2)
        cooling = limiter.decide("okx", TICKER, charge=False)
        other = limiter.decide("okx", "GET /api/v5/market/books", charge=False)
        during = admin(sb.url, "stats")["requests_by_endpoint"].get(TICKER, 0)
        time.sleep(1.2)
        still = admin(sb.url, "stats")["requests_by_endpoint"].get(TICKER, 0)
        answers = collect(handle)
        stats = admin(sb.url, "stats")
    assert before > 10, "the fleet was polling before the 429"
    # OKX names no wait: the fleet waits one 2 s window, for every endpoint (the 429 does
    # not say whose budget ran out)
    assert cooling.cooldown and not cooling.allowed and 1.0 < cooling.retry_after <= 2.0
    assert other.cooldown and not other.allowed
    # only requests already in flight when the 429 left may arrive while told to wait
    assert still - during <= 0 and during - before <= 4
    assert stats["clients"]["127.0.0.1"]["requests_inside_window_after_429"] <= 4
    assert stats["violations"] == 1
    resumed = fresh_after(answers, told_at + 2.0)
    assert resumed, "polling resumed after the cooldown"


def test_a_lost_order_response_is_reconciled_by_okx_s_clordid(
    redis_url: str, namespace: str, redis_client: redis.Redis
) -> None:
    with running_sandbox(dialect="okx") as sb:
        answer, stats, orders = place_with_lost_response(
            redis_client, sb, fleet_config(sb.url, namespace), PLACE, "caiplan7f3a"
        )
    assert answer.source == "reconciled"
    assert answer.data["clientOrderId"] == "caiplan7f3a" and answer.data["status"] == "open"
    assert stats["orders"] == {"sandbox-key": 1}
    assert [o.client_order_id for o in orders] == ["caiplan7f3a"]
    assert stats["requests_by_endpoint"][PLACE] == 1
    assert stats["requests_by_endpoint"][DETAILS] >= 1


def test_the_account_order_limit_okx_publishes_is_adopted_when_lower(
    redis_client: redis.Redis, namespace: str
) -> None:
    limits = {"overrides": {"account_orders_per_2s": 50}}
    with running_sandbox(dialect="okx", limits=limits) as sb:
        cfg = AppConfig.model_validate(fleet_config(sb.url, namespace))
        limiter = ExchangeRateLimitManager(redis_client, cfg)
        table_limit = limiter.table("okx").pool("ACCOUNT_ORDERS").limit
        ex = make_exchange("okx", cfg.exchanges["okx"], limiter=limiter)

        async def ask() -> Any:
            try:
                return await ex.privateGetTradeAccountRateLimit()
            finally:
                await ex.close()

        answer = asyncio.run(ask())
    assert answer["data"][0]["accRateLimit"] == "50"
    adopted = limiter.table("okx").pool("ACCOUNT_ORDERS").limit
    margin = 1 - cfg.rate_limiting.safety_margin
    assert table_limit == pytest.approx(1000 * margin)
    assert adopted == pytest.approx(50 * margin)
