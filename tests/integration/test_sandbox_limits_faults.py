"""The sandbox's limits and faults, as ccxt (and a raw HTTP client) experience them."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path
from typing import Any

import ccxt
import feedparser
import pytest

from ratelimit.tables import BINANCE, scope_weights
from tests.integration.sandbox_fixtures import admin, ccxt_client, running_sandbox

pytestmark = pytest.mark.integration

SMALL = {"limits": {"request_weight_per_minute": 60, "orders_per_10s": 3, "time_scale": 0.1}}


def _weight(endpoint: str, params: dict[str, Any] | None = None) -> float:
    return scope_weights(BINANCE, endpoint, params)["REQUEST_WEIGHT"]


def test_usage_headers_match_the_weight_actually_used() -> None:
    async def scenario(url: str) -> list[tuple[str, float]]:
        ex = ccxt_client(url)
        seen = []
        try:
            # start at the beginning of a (6 s) window so all calls land in one
            await asyncio.sleep(6 - time.time() % 6 + 0.05)
            for call, endpoint, params in [
                (
                    ex.publicGetTickerPrice({"symbol": "BTCUSDT"}),
                    "GET /api/v3/ticker/price",
                    {"symbol": "x"},
                ),
                (
                    ex.publicGetDepth({"symbol": "BTCUSDT", "limit": 500}),
                    "GET /api/v3/depth",
                    {"limit": 500},
                ),
                (ex.publicGetTicker24hr(), "GET /api/v3/ticker/24hr", {}),
                (
                    ex.publicGetKlines({"symbol": "BTCUSDT", "interval": "1m"}),
                    "GET /api/v3/klines",
                    {},
                ),
            ]:
                await call
                seen.append(
                    (ex.last_response_headers["X-MBX-USED-WEIGHT-1M"], _weight(endpoint, params))
                )
        finally:
            await ex.close()
        return seen

    with running_sandbox(limits={"time_scale": 0.1}) as sb:
        seen = asyncio.run(scenario(sb.url))
    running = 0.0
    for header, weight in seen:
        running += weight
        assert float(header) == running
    assert running == 2 + 25 + 80 + 2


def test_over_the_weight_limit_gives_429_then_418_for_a_client_that_keeps_going() -> None:
    async def scenario(url: str) -> tuple[int, str, str]:
        ex = ccxt_client(url)
        ok, first_429 = 0, ""
        try:
            await asyncio.sleep(6 - time.time() % 6 + 0.05)
            while True:
                try:
                    await ex.publicGetKlines({"symbol": "BTCUSDT", "interval": "1m", "limit": 5})
                    ok += 1
                except ccxt.DDoSProtection as exc:  # 429: ccxt's class for it on Binance
                    first_429 = str(exc)
                    retry_after = ex.last_response_headers["Retry-After"]
                    break
            assert int(retry_after) >= 1
            for _ in range(4):  # ban_after=5: the fifth request inside Retry-After is banned
                with pytest.raises(ccxt.DDoSProtection, match="429"):
                    await ex.publicGetPing()
            with pytest.raises(ccxt.DDoSProtection) as banned:
                await ex.publicGetPing()
            return ok, first_429, str(banned.value)
        finally:
            await ex.close()

    with running_sandbox(**SMALL) as sb:
        ok, first, banned = asyncio.run(scenario(sb.url))
        stats = admin(sb.url, "stats")
    assert ok == 30  # 60 weight / 2 per klines call
    assert "429" in first and "-1003" in first
    assert "418" in banned and "banned until" in banned
    client = stats["clients"]["127.0.0.1"]
    assert client["sent_429"] == 5 and client["sent_418"] == 1 and stats["violations"] == 6


def test_order_count_limit_gives_1015() -> None:
    async def scenario(url: str) -> int:
        ex = ccxt_client(url)
        placed = 0
        try:
            await asyncio.sleep(1 - time.time() % 1 + 0.02)
            with pytest.raises(ccxt.DDoSProtection, match="-1015"):
                for _ in range(5):
                    await ex.create_order("ETH/USDT", "limit", "buy", 0.01, 1000)
                    placed += 1
                    assert int(ex.last_response_headers["X-MBX-ORDER-COUNT-10S"]) == placed
        finally:
            await ex.close()
        return placed

    with running_sandbox(**SMALL) as sb:
        assert asyncio.run(scenario(sb.url)) == 3


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        # Binance's -1000/-1001 bodies map to OperationFailed in ccxt (not ExchangeError)
        ("http_500", ccxt.OperationFailed),
        ("http_503", ccxt.OperationFailed),
        ("hang", ccxt.RequestTimeout),
        ("reset", ccxt.NetworkError),
        ("clock_skew", ccxt.InvalidNonce),
    ],
)
def test_each_fault_mode_does_what_it_says(kind: str, error: type) -> None:
    async def scenario(url: str) -> None:
        ex = ccxt_client(url, timeout_ms=1500)
        try:
            await ex.load_markets()
            # aiohttp silently re-sends a GET once when a reused connection is reset, so a
            # reset must happen twice to reach ccxt
            count = 2 if kind == "reset" else 1
            admin(
                url,
                "faults",
                "PUT",
                [
                    {
                        "kind": kind,
                        "endpoint": "GET /api/v3/ticker/24hr",
                        "seconds": 3,
                        "count": count,
                    }
                ],
            )
            with pytest.raises(error):
                await ex.fetch_ticker("BTC/USDT")
            assert (await ex.fetch_ticker("BTC/USDT"))["last"] > 0, "count=1: the next call works"
        finally:
            await ex.close()

    with running_sandbox() as sb:
        asyncio.run(scenario(sb.url))
        assert admin(sb.url, "stats")["faults_injected"] == {kind: 2 if kind == "reset" else 1}


def test_response_lost_leaves_the_order_on_the_exchange_and_findable_by_client_id() -> None:
    async def scenario(url: str) -> None:
        ex = ccxt_client(url, timeout_ms=800)
        try:
            await ex.load_markets()
            admin(
                url,
                "faults",
                "PUT",
                [
                    {
                        "kind": "response_lost",
                        "endpoint": "POST /api/v3/order",
                        "seconds": 2,
                        "count": 1,
                    }
                ],
            )
            with pytest.raises(ccxt.RequestTimeout):
                await ex.create_order(
                    "ETH/USDT", "limit", "buy", 0.01, 1000, {"newClientOrderId": "lost-1"}
                )
            found = await ex.fetch_order(None, "ETH/USDT", {"origClientOrderId": "lost-1"})
            assert found["status"] == "open" and found["amount"] == 0.01
            assert len(await ex.fetch_open_orders("ETH/USDT")) == 1
        finally:
            await ex.close()

    with running_sandbox() as sb:
        asyncio.run(scenario(sb.url))


def test_faults_from_config_apply_by_rate() -> None:
    async def scenario(url: str) -> int:
        ex = ccxt_client(url)
        failures = 0
        try:
            for _ in range(40):
                try:
                    await ex.publicGetTime()
                except ccxt.OperationFailed:
                    failures += 1
        finally:
            await ex.close()
        return failures

    faults = [{"kind": "http_500", "endpoint": "GET /api/v3/time", "rate": 0.5}]
    with running_sandbox(faults=faults) as sb:
        failures = asyncio.run(scenario(sb.url))
    assert 8 <= failures <= 32


def test_two_sandboxes_run_at_once_with_different_limits() -> None:
    with running_sandbox(limits={"request_weight_per_minute": 5}) as a, running_sandbox() as b:
        assert a.port != b.port
        for _ in range(6):
            with urllib.request.urlopen(f"{b.url}/api/v3/ping", timeout=5):
                pass
        codes = []
        for _ in range(6):
            try:
                with urllib.request.urlopen(f"{a.url}/api/v3/ping", timeout=5) as r:
                    codes.append(r.status)
            except urllib.error.HTTPError as exc:
                codes.append(exc.code)
                break
    assert codes == [200] * 5 + [429]


def test_the_news_feed_parses_and_follows_the_price_path() -> None:
    with (
        running_sandbox() as sb,
        urllib.request.urlopen(f"{sb.url}/sandbox/news.rss", timeout=10) as r,
    ):
        feed = feedparser.parse(r.read())
    assert not feed.bozo
    titles = [e.title for e in feed.entries]
    assert len(titles) >= 5 * 40
    assert any("Bitcoin" in t for t in titles)
    assert all(e.published_parsed for e in feed.entries)


def test_a_candle_file_is_replayed(tmp_path: Path) -> None:
    candles = tmp_path / "candles.csv"
    candles.write_text(
        "time,open,high,low,close,volume\n"
        + "".join(f"{i},{100 + i},{101 + i},{99 + i},{100.5 + i},10\n" for i in range(50))
    )
    with running_sandbox(candles_file=str(candles), symbols=["BTC/USDT"]) as sb:
        rows = asyncio.run(_klines(sb.url))
    closes = [float(row[4]) for row in rows]
    assert all(close % 1 == 0.5 for close in closes[:-1])


async def _klines(url: str) -> list[list[Any]]:
    ex = ccxt_client(url)
    try:
        result: list[list[Any]] = await ex.publicGetKlines(
            {"symbol": "BTCUSDT", "interval": "1m", "limit": 20}
        )
        return result
    finally:
        await ex.close()


def test_a_bad_candle_file_is_a_clear_error(tmp_path: Path) -> None:
    from sandbox.market import load_replay

    bad = tmp_path / "bad.csv"
    bad.write_text("1,100,99,101,100,5\n")
    with pytest.raises(ValueError, match=r"bad.csv:1: prices are not a candle"):
        load_replay(bad)


def test_malformed_json_reaches_ccxt_which_does_not_raise() -> None:
    """ccxt hands a truncated JSON body to its parser as text and returns empty fields.

    This is why exchange access must validate what ccxt returns (a ticker without a price is
    an error, not a ticker): the sandbox reproduces the case for that code's tests.
    """

    async def scenario(url: str) -> Any:
        ex = ccxt_client(url)
        try:
            await ex.load_markets()
            admin(
                url,
                "faults",
                "PUT",
                [{"kind": "malformed_json", "count": 1, "endpoint": "GET /api/v3/ticker/24hr"}],
            )
            ticker = await ex.fetch_ticker("BTC/USDT")
            return ticker, ex.last_http_response
        finally:
            await ex.close()

    with running_sandbox() as sb:
        ticker, raw = asyncio.run(scenario(sb.url))
    assert ticker["last"] is None and ticker["bid"] is None
    assert raw.startswith('{"symbol": "BTCUSDT", "price": "6') and not raw.endswith("}")
