"""The fleet on Kraken: real Redis, the Kraken sandbox over HTTP, several processes."""

from __future__ import annotations

import asyncio
import base64
import json
import multiprocessing
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from core.config import AppConfig
from ratelimit.manager import ExchangeRateLimitManager
from resilience import FallbackConfig, ResilientAPIClient
from tests.integration.lost_orders import place_with_lost_response
from tests.integration.sandbox_fixtures import admin, running_sandbox

pytestmark = pytest.mark.integration
SPAWN = multiprocessing.get_context("spawn")
BALANCE = "POST /0/private/BalanceEx"
PLACE = "POST /0/private/AddOrder"
#: the fleet's scope of ccxt's BalanceEx call (exchanges/limited.py scope_of)
BALANCE_SCOPE = "POST /BalanceEx"
#: Kraken secrets are base64 (ccxt decodes them); this test uses its own
SECRET = base64.b64encode(b"kraken-sandbox-secret-0123456789").decode()
#: the call counter in these tests: at most 4, draining 2 per second (Starter: 15, 0.33/s)
COUNTER, DECAY = 4.0, 2.0
#: public calls (load_markets: Assets + AssetPairs per process) must not be the bottleneck
PUBLIC = {"public_burst": 10.0, "public_rate": 5.0}
#: 4 processes share one key: Kraken's per-key nonce window (ms) lets their nonces interleave
NONCE_WINDOW = 10_000.0


def sandbox_limits(**extra: float) -> dict[str, Any]:
    overrides = {"max_counter": COUNTER, "counter_decay": DECAY, **PUBLIC}
    return {"overrides": {**overrides, "nonce_window": NONCE_WINDOW, **extra}}


def fleet_config(url: str, namespace: str, **exchange: Any) -> dict[str, Any]:
    return {
        "performance": {"batch_processing": {"enabled": False}},
        "redis": {"key_prefix": namespace},
        "exchanges": {
            "kraken": {
                "base_url": url,
                "sandbox": {"api_secret": SECRET},
                "circuit_breaker": {"failure_threshold": 50, "recovery_timeout": 3},
                "rate_limits": [
                    {
                        "type": "leaky_bucket",
                        "name": "PRIVATE_COUNTER",
                        "capacity": COUNTER,
                        "leak_rate": DECAY,
                    },
                    {
                        "type": "token_bucket",
                        "name": "PUBLIC",
                        "capacity": PUBLIC["public_burst"],
                        "rate": PUBLIC["public_rate"],
                    },
                ],
                **exchange,
            }
        },
        "retry_strategies": {"default": {"max_attempts": 2, "base_delay": 0.05, "jitter": False}},
    }


def drive(
    redis_url: str, config: dict[str, Any], seconds: float, start_at: float, pause: float, out: str
) -> None:
    """Ask for the balance (a private call) until ``seconds`` pass; record each answer."""
    cfg = AppConfig.model_validate(config)

    async def run() -> list[dict[str, Any]]:
        client = ResilientAPIClient(redis.Redis.from_url(redis_url), cfg)
        answers: list[dict[str, Any]] = []
        await client.markets("kraken")
        while time.time() < start_at:
            await asyncio.sleep(0.005)
        deadline = time.time() + seconds
        try:
            while time.time() < deadline:
                try:
                    answer = await client.resilient_request(
                        "kraken", "fetch_balance", {}, FallbackConfig(level="none", timeout=8)
                    )
                    answers.append({"t": time.time(), "source": answer.source})
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


def test_four_processes_at_twice_the_call_counter_cause_no_violation(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    with running_sandbox(dialect="kraken", api_secret=SECRET, limits=sandbox_limits()) as sb:
        config = fleet_config(sb.url, namespace)
        # 4 processes x 1 balance per second: twice the 2 per second the counter drains
        seconds = 10.0
        answers = collect(spawn((redis_url, config, seconds, time.time() + 4, 1.0), tmp_path, 4))
        stats = admin(sb.url, "stats")
    key = stats["clients"]["key:sandbox-key"]
    assert stats["violations"] == 0 and key["rate_limit_exceeded"] == 0, stats["clients"]
    sent = stats["requests_by_endpoint"].get(BALANCE, 0)
    # the fleet really pushed: most of the counter's budget (4 + 2/s, less the reserve) used
    assert sent >= 0.6 * DECAY * seconds, sent
    # ... and no more: unthrottled, the 4 processes would have sent about 40
    assert sent <= COUNTER + DECAY * (seconds + 1), sent
    asked = sum(len(p) for p in answers)
    assert asked < 0.8 * 4 * seconds, "the processes waited in the fleet's limiter"
    errors = [a["error"] for p in answers for a in p if "error" in a]
    assert not [e for e in errors if "Rate limit" in e or "nonce" in e.lower()], errors


def test_kraken_s_rate_limit_answer_stops_every_process_for_the_cooldown(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with running_sandbox(dialect="kraken", api_secret=SECRET, limits=sandbox_limits()) as sb:
        config = fleet_config(sb.url, namespace)
        limiter = ExchangeRateLimitManager(redis_client, AppConfig.model_validate(config))
        # 4 x 0.4 per second: inside the counter's 2 per second
        handle = spawn((redis_url, config, 14.0, time.time() + 3.0, 2.5), tmp_path, 4)
        before, waited = 0, time.time() + 15
        while before < 4 and time.time() < waited:
            time.sleep(0.1)
            before = admin(sb.url, "stats")["requests_by_endpoint"].get(BALANCE, 0)
        # HTTP 200 {"error": ["EAPI:Rate limit exceeded"]}, the key's counter set to its max
        admin(sb.url, "faults", "PUT", [{"kind": "http_429", "count": 1, "endpoint": BALANCE}])
        while not admin(sb.url, "stats")["faults_injected"]:
            time.sleep(0.01)
        told_at = time.time()
        time.sleep(0.3)
        cooling = limiter.decide("kraken", BALANCE_SCOPE, charge=False)
        public = limiter.decide("kraken", "GET /Ticker", charge=False)
        during = admin(sb.url, "stats")["requests_by_endpoint"].get(BALANCE, 0)
        time.sleep(4.5)
        still = admin(sb.url, "stats")["requests_by_endpoint"].get(BALANCE, 0)
        answers = collect(handle)
        stats = admin(sb.url, "stats")
    assert before >= 4, "the fleet was polling before the limit answer"
    # no Retry-After from Kraken: the profile's 2 / 0.33 s (a history call's room), for the
    # PRIVATE_COUNTER pool only (public calls are another limiter)
    assert cooling.cooldown and not cooling.allowed and 5.0 < cooling.retry_after <= 6.1
    assert public.allowed and not public.cooldown
    # only requests already in flight when the answer left may arrive while told to wait
    assert still - during <= 0 and during - before <= 4
    assert 1 <= stats["violations"] <= 5
    resumed = [a["t"] for p in answers for a in p if "source" in a and a["t"] > told_at + 6.1]
    assert resumed, "polling resumed after the cooldown"


def test_a_lost_order_response_is_reconciled_by_kraken_s_cl_ord_id(
    redis_url: str, namespace: str, redis_client: redis.Redis
) -> None:
    with running_sandbox(dialect="kraken", api_secret=SECRET, limits=sandbox_limits()) as sb:
        answer, stats, orders = place_with_lost_response(
            redis_client, sb, fleet_config(sb.url, namespace), PLACE, "caiplan7f3a"
        )
    assert [o.client_order_id for o in orders] == ["caiplan7f3a"]
    assert stats["orders"] == {"sandbox-key": 1}
    assert stats["requests_by_endpoint"][PLACE] == 1
    assert answer.source == "reconciled"
    assert answer.data["clientOrderId"] == "caiplan7f3a" and answer.data["status"] == "open"
