"""``crypto-ai history fetch``: the Binance sandbox over HTTP, unmodified ccxt, a real Redis
and the fleet's limiter; the store is read back with the replay's own loader."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from typer.testing import CliRunner

from backtest.data import load_csv
from backtest.history import store_path
from core.config import AppConfig
from resilience import ResilientAPIClient
from tests.integration.sandbox_fixtures import admin, running_sandbox
from workers.history import Fetched, fetch

pytestmark = pytest.mark.integration

SYMBOLS = ["BTC/USDT", "ETH/USDT"]
HOUR = 3_600_000
KLINES = "GET /api/v3/klines"


def config(url: str, namespace: str, redis_url: str | None = None) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "redis": {"key_prefix": namespace},
        "exchanges": {"binance": {"base_url": url}},
        "watchlist": [{"exchange": "binance", "symbols": SYMBOLS}],
    }
    if redis_url is not None:
        cfg["redis"]["url"] = redis_url
    return cfg


def charged(url: str) -> float:
    return float(sum(c["weight_total"] for c in admin(url, "stats")["clients"].values()))


def klines(url: str) -> int:
    return int(admin(url, "stats")["requests_by_endpoint"].get(KLINES, 0))


def remaining(client: ResilientAPIClient) -> float:
    check = client.limiter.decide("binance", "public", weight=0, charge=False)
    return float(check.remaining["REQUEST_WEIGHT"])


def download(client: ResilientAPIClient, store: Path, since: int, **kw: Any) -> list[Fetched]:
    async def run() -> list[Fetched]:
        await client.markets("binance")  # ccxt reads the markets once per process
        return await fetch(
            client, "binance", SYMBOLS, "1h", since_ms=since, store=store, limit=20, **kw
        )

    return asyncio.run(run())


def closed_hours(since: int) -> list[int]:
    """Every hourly open from ``since`` whose candle has closed by now."""
    now = int(time.time() * 1000)
    return list(range(since, now - HOUR + 1, HOUR))


def stored(store: Path, symbol: str) -> list[int]:
    return [c.time for c in load_csv(store_path(store, "binance", symbol, "1h"))]


def test_a_fetch_stores_every_closed_candle_once_in_order_admitted_by_the_limiter(
    redis_client: redis.Redis, namespace: str, tmp_path: Path
) -> None:
    with running_sandbox(history_days=3, symbols=SYMBOLS) as sb:
        client = ResilientAPIClient(
            redis_client, AppConfig.model_validate(config(sb.url, namespace))
        )
        # the sandbox's history starts 3 days back: ask from 2 days back, whole hours
        since = (int(time.time() * 1000) // HOUR - 48) * HOUR
        asyncio.run(client.markets("binance"))
        weight, budget = charged(sb.url), remaining(client)
        first = download(client, tmp_path, since)
        want = closed_hours(since)
        for symbol in SYMBOLS:
            times = stored(tmp_path, symbol)
            assert times == want[: len(times)] and len(times) >= len(want) - 1, symbol
        assert [f.written for f in first] == [len(stored(tmp_path, s)) for s in SYMBOLS]
        assert all(f.requests >= 3 for f in first)  # 48 candles in pages of 20
        # every page was admitted by the fleet's limiter: what it charged is what Binance did
        spent = charged(sb.url) - weight
        assert spent > 0
        assert budget - remaining(client) == pytest.approx(spent)

        asked = klines(sb.url)
        again = download(client, tmp_path, since)
        # nothing new, unless an hour closed between the two runs
        assert all(f.written <= 1 for f in again), again
        assert all(f.requests == 1 for f in again), again
        assert klines(sb.url) - asked == len(SYMBOLS)
        for symbol in SYMBOLS:
            times = stored(tmp_path, symbol)
            assert times == sorted(set(times))


def test_an_interrupted_fetch_resumes_after_the_last_stored_candle_without_duplicates(
    redis_client: redis.Redis, namespace: str, tmp_path: Path
) -> None:
    with running_sandbox(history_days=3, symbols=SYMBOLS) as sb:
        client = ResilientAPIClient(
            redis_client, AppConfig.model_validate(config(sb.url, namespace))
        )
        since = (int(time.time() * 1000) // HOUR - 40) * HOUR
        part = download(client, tmp_path, since, until_ms=since + 25 * HOUR)
        assert [f.written for f in part] == [25, 25]
        assert stored(tmp_path, SYMBOLS[0]) == list(range(since, since + 25 * HOUR, HOUR))
        with store_path(tmp_path, "binance", SYMBOLS[0], "1h").open() as handle:
            head = handle.read()
        rest = download(client, tmp_path, since)
        # the rest starts after the last stored candle: no page asks for the first 25 again
        assert all(f.requests == 1 for f in rest), rest  # 15 left: one page of 20
        for symbol in SYMBOLS:
            times = stored(tmp_path, symbol)
            assert times == closed_hours(since)[: len(times)] and len(times) >= 39, symbol
        with store_path(tmp_path, "binance", SYMBOLS[0], "1h").open() as handle:
            assert handle.read().startswith(head)


def test_the_command_fetches_and_backtest_reads_the_store(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    from workers.cli import app

    with running_sandbox(history_days=3, symbols=SYMBOLS) as sb:
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config(sb.url, namespace, redis_url)))
        since = (int(time.time() * 1000) // HOUR - 60) * HOUR
        iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since / 1000))
        store = tmp_path / "store"
        runner = CliRunner()
        args = ["history", "fetch", "--exchange", "binance", "--symbols", ",".join(SYMBOLS)]
        args += ["--since", iso, "--store", str(store), "--config", str(path)]
        done = runner.invoke(app, args)
        assert done.exit_code == 0, done.output
        assert "BTC/USDT: " in done.output and "ETH/USDT: " in done.output
        assert (
            (store / "binance" / "ETH-USDT" / "1h.csv")
            .read_text()
            .startswith("timestamp,open,high,low,close,volume\n")
        )
        out = tmp_path / "report"
        args = ["backtest", "--store", str(store), "--exchange", "binance"]
        args += ["--symbol", "BTC/USDT", "--out", str(out)]
        shown = runner.invoke(app, args)
        assert shown.exit_code == 0, shown.output
        assert (out / "summary.json").is_file()


def parts(store: Path) -> list[Path]:
    return sorted(store.rglob("*.part"))


def test_a_since_before_the_first_stored_candle_backfills_the_gap_once(
    redis_client: redis.Redis, namespace: str, tmp_path: Path
) -> None:
    with running_sandbox(history_days=4, symbols=SYMBOLS) as sb:
        client = ResilientAPIClient(
            redis_client, AppConfig.model_validate(config(sb.url, namespace))
        )
        late = (int(time.time() * 1000) // HOUR - 30) * HOUR
        download(client, tmp_path, late)
        early = late - 45 * HOUR
        back = download(client, tmp_path, early)
        for symbol in SYMBOLS:
            times = stored(tmp_path, symbol)
            assert times == closed_hours(early)[: len(times)], symbol  # one unbroken stretch
            assert len(times) >= len(closed_hours(early)) - 1, symbol
        assert [f.backfilled for f in back] == [45, 45]
        assert all(f.written >= 45 and f.pending == 0 for f in back), back
        # the gap of 45 in pages of 20 from --since: 3 requests; after the last stored: 1
        assert all(f.requests == 4 for f in back), back
        again = download(client, tmp_path, early)
        assert all(f.requests == 1 and f.backfilled == 0 for f in again), again
        assert parts(tmp_path) == []


def test_an_interrupted_backfill_is_kept_aside_and_resumed_where_it_stopped(
    redis_client: redis.Redis, namespace: str, tmp_path: Path
) -> None:
    with running_sandbox(history_days=4, symbols=SYMBOLS) as sb:
        client = ResilientAPIClient(
            redis_client, AppConfig.model_validate(config(sb.url, namespace))
        )
        late = (int(time.time() * 1000) // HOUR - 30) * HOUR
        download(client, tmp_path, late)
        before = {s: stored(tmp_path, s) for s in SYMBOLS}
        early = late - 45 * HOUR
        cut = download(client, tmp_path, early, until_ms=early + 25 * HOUR)
        assert [(f.written, f.pending) for f in cut] == [(0, 25), (0, 25)]
        # the store stays one unbroken stretch: the 25 wait beside it, not in it
        assert {s: stored(tmp_path, s) for s in SYMBOLS} == before
        assert len(parts(tmp_path)) == 2
        rest = download(client, tmp_path, early)
        # the 20 left of the gap in one page (nothing asked twice), then after the last stored
        assert all(f.requests == 2 and f.backfilled == 45 for f in rest), rest
        for symbol in SYMBOLS:
            times = stored(tmp_path, symbol)
            assert times == closed_hours(early)[: len(times)], symbol
            assert times[45:] == before[symbol][: len(times) - 45], symbol
        assert parts(tmp_path) == []
