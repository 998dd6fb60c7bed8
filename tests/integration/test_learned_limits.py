"""Limits learned from the exchange: a fleet configured too high converges without a ban.

The fleet's table says 4x what the exchange allows. Binance publishes its limit
(``exchangeInfo.rateLimits``, read by ccxt's load_markets); every process adopts it before
its first market-data call, and 4 processes offering twice the real budget get no 429 and
no 418. OKX publishes no per-endpoint limit: the fleet learns it from the 429s (AIMD in
``ratelimit/feedback.py``), fleet-wide, and the 429s stop within a few windows, with no
lockout.
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
from exchanges.profiles.okx import WINDOW_SECONDS
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


OKX_TICKER = "GET /api/v5/market/ticker"
OKX_TABLE = 20  # the fleet's table: 20 tickers per 2 s (OKX's published default)
OKX_REAL = OKX_TABLE // 4  # what the sandbox allows


def poll_okx(redis_url: str, config: dict[str, Any], seconds: float, go: str, out: str) -> None:
    """Say ready, wait for the start time in ``go``, then ask for tickers back to back."""
    client = ResilientAPIClient(
        redis.Redis.from_url(redis_url), AppConfig.model_validate(config), coalesce=False
    )
    fc = FallbackConfig(timeout=10, cache_enabled=False)

    async def run() -> dict[str, Any]:
        ok = errors = 0
        await client.resilient_request("okx", "fetch_ticker", {"symbol": "BTC/USDT"}, fc)
        Path(out + ".ready").touch()
        while not Path(go).exists() or not Path(go).read_text():
            await asyncio.sleep(0.005)
        start_at = float(Path(go).read_text())
        while time.time() < start_at:
            await asyncio.sleep(0.005)
        try:
            end = time.time() + seconds
            while time.time() < end:
                try:
                    symbol = SYMBOLS[(ok + errors) % len(SYMBOLS)]
                    await client.resilient_request("okx", "fetch_ticker", {"symbol": symbol}, fc)
                    ok += 1
                except Exception:  # counted; the test reads the sandbox
                    errors += 1
            limit = client.limiter.table("okx").pool("MARKET_TICKER").limit
        finally:
            await client.close()
        return {"ok": ok, "errors": errors, "limit": limit}

    Path(out).write_text(json.dumps(asyncio.run(run())))


def test_an_okx_fleet_configured_four_times_too_high_learns_the_limit_from_its_429s(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    seconds = 15.0
    limits = {"overrides": {"market_ticker_per_2s": OKX_REAL}}
    with running_sandbox(dialect="okx", symbols=SYMBOLS, limits=limits) as sb:
        config = {
            "redis": {"key_prefix": namespace},
            "exchanges": {"okx": {"base_url": sb.url}},
            "performance": {"caching": {"enabled": False}, "batch_processing": {"enabled": False}},
        }
        go, outs = tmp_path / "go", [tmp_path / f"okx-{i}.json" for i in range(4)]
        procs = [
            SPAWN.Process(target=poll_okx, args=(redis_url, config, seconds, str(go), str(o)))
            for o in outs
        ]
        for p in procs:
            p.start()
        deadline = time.time() + 60
        while not all(Path(f"{o}.ready").exists() for o in outs) and time.time() < deadline:
            time.sleep(0.02)
        start = time.time() + 0.2
        go.write_text(str(start))
        # the sandbox's count of this IP, sampled through the run: (t, tickers, 429s)
        timeline: list[tuple[float, int, int, int]] = []
        while any(p.is_alive() for p in procs):
            c = admin(sb.url, "stats")["clients"]["127.0.0.1"]
            sent = c["requests_by_endpoint"].get(OKX_TICKER, 0)
            timeline.append((time.time() - start, sent, c["sent_429"], c["lockouts"]))
            time.sleep(0.1)
        for p in procs:
            p.join(30)
            assert p.exitcode == 0
        results = [json.loads(o.read_text()) for o in outs]

    def at(t: float) -> tuple[float, int, int, int]:
        return next((row for row in timeline if row[0] >= t), timeline[-1])

    settled, end, last = at(seconds / 3), at(seconds), timeline[-1]
    per_window = [at(w)[2] - at(w - WINDOW_SECONDS)[2] for w in range(2, int(seconds) + 1, 2)]
    admitted = (end[1] - end[2]) - (settled[1] - settled[2])
    budget = OKX_REAL * (end[0] - settled[0]) / WINDOW_SECONDS
    print(f"429s per 2 s window: {per_window}; lockouts {last[3]}; learned {results}")
    print(f"tickers admitted after {settled[0]:.1f} s: {admitted} of {budget:.1f} allowed")
    assert last[3] == 0, "no lockout"
    assert last[2] > 0, "the table was too high: the exchange refused some at first"
    # the fleet converged: no 429 in the last two thirds of the run
    assert last[2] == settled[2], per_window
    # every process prices the ticker pool below the real limit, learned fleet-wide
    assert all(r["limit"] <= OKX_REAL for r in results), results
    # and still uses a fair share of the real budget: the medium-priority share (80%) of
    # the learned limit, 3 of every 5 with the table's 18 halved twice to 4.5
    assert admitted >= 0.5 * budget, (admitted, budget)
