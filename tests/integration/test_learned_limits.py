"""Limits learned from the exchange: a fleet configured too high converges without a ban.

The fleet's table says 4x what the exchange allows. The exchange publishes its limit
(Binance: ``exchangeInfo.rateLimits``, read by ccxt's load_markets); every process adopts it
before its first market-data call, and 4 processes offering twice the real budget get no
429 and no 418.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import time
from pathlib import Path
from typing import Any

import redis

from core.config import AppConfig
from resilience import FallbackConfig, ResilientAPIClient
from tests.integration.sandbox_fixtures import admin, running_sandbox

SPAWN = multiprocessing.get_context("spawn")
SYMBOLS = ["BTC/USDT", "ETH/USDT"]
REAL_LIMIT = 400  # weight per (scaled) minute the sandbox enforces
TIME_SCALE = 0.1  # a 6 s "minute"


def fleet_config(url: str, namespace: str) -> dict[str, Any]:
    return {
        "redis": {"key_prefix": namespace},
        "exchanges": {
            "binance": {
                "base_url": url,
                # the operator's (wrong) limit: 4x what the exchange allows, same window
                "rate_limits": [
                    {
                        "type": "fixed_window",
                        "name": "REQUEST_WEIGHT",
                        "limit": REAL_LIMIT * 4,
                        "window": 60 * TIME_SCALE,
                    }
                ],
            }
        },
        "rate_limiting": {"max_wait": 30},
        "performance": {"caching": {"enabled": False}, "batch_processing": {"enabled": False}},
    }


def poll(redis_url: str, config: dict[str, Any], seconds: float, out: str) -> None:
    """Ask for order books (weight 5 each) as fast as the fleet allows; record outcomes."""
    # not coalesced: every request goes upstream, so demand is far above the budget
    client = ResilientAPIClient(
        redis.Redis.from_url(redis_url), AppConfig.model_validate(config), coalesce=False
    )
    fc = FallbackConfig(timeout=30, cache_enabled=False)

    async def run() -> dict[str, Any]:
        ok = errors = 0
        adopted: float | None = None
        try:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                for symbol in SYMBOLS:
                    try:
                        await client.resilient_request(
                            "binance", "fetch_order_book", {"symbol": symbol, "limit": 100}, fc
                        )
                        ok += 1
                    except Exception:  # counted; the test reads the sandbox
                        errors += 1
                adopted = client.limiter.table("binance").pool("REQUEST_WEIGHT").limit
        finally:
            await client.close()
        return {"ok": ok, "errors": errors, "limit": adopted}

    Path(out).write_text(json.dumps(asyncio.run(run())))


def test_a_fleet_configured_four_times_too_high_adopts_the_published_limit_without_a_ban(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    limits = {"request_weight_per_minute": REAL_LIMIT, "time_scale": TIME_SCALE}
    with running_sandbox(symbols=SYMBOLS, limits=limits) as sb:
        config = fleet_config(sb.url, namespace)
        outs = [tmp_path / f"poll-{i}.json" for i in range(4)]
        procs = [SPAWN.Process(target=poll, args=(redis_url, config, 15.0, str(o))) for o in outs]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
            assert p.exitcode == 0
        results = [json.loads(o.read_text()) for o in outs]
        stats = admin(sb.url, "stats")
    sent_429 = sum(c["sent_429"] for c in stats["clients"].values())
    sent_418 = sum(c["sent_418"] for c in stats["clients"].values())
    assert (sent_429, sent_418) == (0, 0), stats["clients"]
    # every process adopted the published limit, less the safety margin
    assert {r["limit"] for r in results} == {REAL_LIMIT * 0.9}, results
    # the budget was used (demand, not coalesced, was far above it)
    assert sum(c["weight_total"] for c in stats["clients"].values()) >= REAL_LIMIT * 0.9 * 2
