"""The fleet on Coinbase: real Redis, the Coinbase sandbox over HTTP, several processes."""

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
from exchanges.gateway import CcxtGateway
from exchanges.profiles import profile
from ratelimit.manager import ExchangeRateLimitManager
from resilience import FallbackConfig, ResilientAPIClient
from tests.integration.sandbox_fixtures import admin, running_sandbox

pytestmark = pytest.mark.integration
SPAWN = multiprocessing.get_context("spawn")
SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT"]
TICKERS = tuple(
    f"GET /api/v3/brokerage/market/products/{s.replace('/', '-')}/ticker" for s in SYMBOLS
)
ORDERS = "POST /api/v3/brokerage/orders"


def fleet_config(url: str, namespace: str, **exchange: Any) -> dict[str, Any]:
    return {
        "performance": {"batch_processing": {"enabled": False}},
        "redis": {"key_prefix": namespace},
        "exchanges": {"coinbase": {"base_url": url, **exchange}},
        "retry_strategies": {"default": {"max_attempts": 2, "base_delay": 0.05, "jitter": False}},
    }


def spawn(target: Any, args: tuple[Any, ...], tmp: Path, count: int) -> list[Any]:
    """Start ``count`` processes running ``target(index, *args, out_file)``."""
    outs = [tmp / f"{target.__name__}-{time.time_ns()}-{i}.json" for i in range(count)]
    procs = [SPAWN.Process(target=target, args=(i, *args, str(o))) for i, o in enumerate(outs)]
    for p in procs:
        p.start()
    return [procs, outs]


def go(handle: list[Any], tmp: Path, delay: float = 0.5) -> float:
    """Wait until every process has loaded the markets; tell them when to start."""
    _, outs = handle
    deadline = time.time() + 60
    while not all(Path(f"{o}.ready").exists() for o in outs):
        assert time.time() < deadline, "the processes did not start"
        time.sleep(0.02)
    start_at = time.time() + delay
    (tmp / "go").write_text(str(start_at))
    return start_at


async def wait_for_go(out: str) -> float:
    """Say ready; return the start time the test writes."""
    Path(f"{out}.ready").touch()
    go_file = Path(out).parent / "go"
    while not go_file.exists() or not go_file.read_text():
        await asyncio.sleep(0.005)
    start_at = float(go_file.read_text())
    while time.time() < start_at:
        await asyncio.sleep(0.005)
    return start_at


def collect(handle: list[Any]) -> list[Any]:
    procs, outs = handle
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    return [json.loads(o.read_text()) for o in outs]


def offer(
    index: int,
    redis_url: str,
    config: dict[str, Any],
    rate: float,
    seconds: float,
    out: str,
) -> None:
    """Ask for one symbol's ticker ``rate`` times a second (not waiting for answers)."""
    cfg = AppConfig.model_validate(config)
    symbol = SYMBOLS[index % len(SYMBOLS)]

    async def ask(client: ResilientAPIClient) -> dict[str, Any]:
        try:
            answer = await client.resilient_request(
                "coinbase", "fetch_ticker", {"symbol": symbol}, FallbackConfig(timeout=4)
            )
            return {"t": time.time(), "source": answer.source}
        except Exception as exc:  # recorded for the test to judge
            return {"t": time.time(), "error": type(exc).__name__}

    async def run() -> list[dict[str, Any]]:
        # no coalescing: each of the process's requests is its own exchange call
        client = ResilientAPIClient(redis.Redis.from_url(redis_url), cfg, coalesce=False)
        try:
            await client.resilient_request("coinbase", "load_markets", {})
            start_at = await wait_for_go(out)
            tasks = []
            for n in range(int(rate * seconds)):
                await asyncio.sleep(max(0.0, start_at + n / rate - time.time()))
                tasks.append(asyncio.create_task(ask(client)))
            return list(await asyncio.gather(*tasks))
        finally:
            await client.close()

    Path(out).write_text(json.dumps(asyncio.run(run())))


def ticker_calls(url: str) -> int:
    calls = admin(url, "stats")["requests_by_endpoint"]
    return sum(int(calls.get(e, 0)) for e in TICKERS)


def test_four_processes_at_twice_the_public_limit_cause_no_violation(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    limit, seconds = 5, 10.0
    sandbox_limits = {"overrides": {"public_per_second": limit}}
    pool = {"name": "PUBLIC", "type": "token_bucket", "capacity": limit, "rate": limit}
    with running_sandbox(dialect="coinbase", limits=sandbox_limits) as sb:
        config = fleet_config(sb.url, namespace, rate_limits=[pool])
        # 4 processes x 2.5 requests per second = 10 per second: twice the limit
        handle = spawn(offer, (redis_url, config, limit * 2 / 4, seconds), tmp_path, 4)
        go(handle, tmp_path)
        answers = collect(handle)
        stats = admin(sb.url, "stats")
        served = ticker_calls(sb.url)
    assert stats["violations"] == 0, stats["clients"]
    offered = sum(len(a) for a in answers)
    assert offered == 4 * int(limit * 2 / 4 * seconds)
    # the fleet sent what the limit allows (a bucket's burst plus its rate), no more
    assert limit * seconds * 0.6 <= served <= limit * (seconds + 4) + limit
    refused = [a for p in answers for a in p if "error" in a]
    assert refused, "twice the limit cannot all be served"
    assert {a["error"] for a in refused} <= {"RateLimitedError", "TimeoutError"}


def poll(index: int, redis_url: str, config: dict[str, Any], seconds: float, out: str) -> None:
    """Ask for a ticker in a loop; record when each answer came and from where."""
    cfg = AppConfig.model_validate(config)
    symbol = SYMBOLS[index % len(SYMBOLS)]

    async def run() -> list[dict[str, Any]]:
        client = ResilientAPIClient(redis.Redis.from_url(redis_url), cfg)
        answers: list[dict[str, Any]] = []
        try:
            await client.resilient_request("coinbase", "load_markets", {})
            await wait_for_go(out)
            deadline = time.time() + seconds
            while time.time() < deadline:
                try:
                    answer = await client.resilient_request(
                        "coinbase",
                        "fetch_ticker",
                        {"symbol": symbol},
                        FallbackConfig(level="partial", timeout=1),
                    )
                    answers.append({"t": time.time(), "source": answer.source})
                except Exception as exc:  # recorded for the test to judge
                    answers.append({"t": time.time(), "error": type(exc).__name__})
                await asyncio.sleep(0.1)
        finally:
            await client.close()
        return answers

    Path(out).write_text(json.dumps(asyncio.run(run())))


def test_a_429_cools_every_process_down(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with running_sandbox(dialect="coinbase") as sb:
        config = fleet_config(sb.url, namespace)
        handle = spawn(poll, (redis_url, config, 6.0), tmp_path, 4)
        start_at = go(handle, tmp_path)
        time.sleep(max(0.0, start_at + 2.0 - time.time()))
        before = ticker_calls(sb.url)
        assert before > 10, "the processes were polling"
        admin(sb.url, "faults", "PUT", [{"kind": "http_429", "count": 1, "seconds": 2}])
        # the next ticker call gets the 429; then nobody calls Coinbase any more
        while admin(sb.url, "stats")["faults_injected"].get("http_429", 0) == 0:
            time.sleep(0.01)
        throttled_at = time.time()
        at_429 = ticker_calls(sb.url)
        time.sleep(0.5)
        settled = ticker_calls(sb.url)
        answers = collect(handle)
        stats = admin(sb.url, "stats")
        after = ticker_calls(sb.url)
        limiter = ExchangeRateLimitManager(
            redis_client, AppConfig.model_validate(fleet_config(sb.url, namespace))
        )
        decision = limiter.decide(
            "coinbase", "GET /api/v3/brokerage/market/products/{product_id}/ticker"
        )
    # only requests already in flight when the 429 left may still arrive
    assert settled - at_429 <= 4
    assert after == settled, "no process called the exchange during the cooldown"
    assert stats["violations"] == 1
    assert all(c["requests_inside_lockout"] <= 4 for c in stats["clients"].values())
    assert decision.cooldown and not decision.allowed and decision.retry_after > 50
    late = [a for p in answers for a in p if a["t"] > throttled_at + 1.0]
    assert late and all(a.get("source") != "exchange" for a in late)


def lost_order(redis_client: redis.Redis, namespace: str) -> tuple[Any, dict[str, Any], str]:
    """Place a limit order whose response is lost; return the gate's answer and the stats."""
    cid = profile("coinbase").new_client_order_id()
    with running_sandbox(dialect="coinbase") as sb:
        settings = fleet_config(sb.url, namespace)
        settings["trading"] = {"risk": {"max_position_per_symbol": 1e6}}
        cfg = AppConfig.model_validate(settings)
        limiter = ExchangeRateLimitManager(redis_client, cfg)
        client = ResilientAPIClient(
            redis_client, cfg, limiter=limiter, gateway=CcxtGateway(cfg, limiter, timeout_ms=1000)
        )
        admin(
            sb.url,
            "faults",
            "PUT",
            [{"kind": "response_lost", "seconds": 3, "count": 1, "endpoint": ORDERS}],
        )

        async def place() -> Any:
            try:
                ticker = await client.resilient_request(
                    "coinbase", "fetch_ticker", {"symbol": "ETH/USDT"}
                )
                return await client.resilient_request(
                    "coinbase",
                    "create_order",
                    {
                        "symbol": "ETH/USDT",
                        "type": "limit",
                        "side": "buy",
                        "amount": 0.01,
                        "price": round(ticker.data["last"] * 0.99, 2),
                        "params": {"clientOrderId": cid},
                    },
                )
            finally:
                await client.close()

        answer = asyncio.run(place())
        stats = admin(sb.url, "stats")
    return answer, stats, cid


def check_reconciled(answer: Any, stats: dict[str, Any], cid: str) -> None:
    assert answer.source == "reconciled"
    assert answer.data["clientOrderId"] == cid and answer.data["status"] == "open"
    assert stats["orders"] == {"sandbox-key": 1}
    assert stats["requests_by_endpoint"][ORDERS] == 1


def test_a_lost_order_response_is_reconciled_by_the_client_order_id(
    redis_url: str, namespace: str, redis_client: redis.Redis
) -> None:
    check_reconciled(*lost_order(redis_client, namespace))
