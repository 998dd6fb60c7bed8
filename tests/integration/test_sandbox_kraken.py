"""The Kraken sandbox dialect as unmodified ccxt (and a raw HTTP client) sees it."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

import ccxt
import pytest

from core.config import ExchangeConfig
from core.errors import MalformedResponseError
from exchanges.ccxt_factory import make_exchange
from exchanges.endpoints import check_result
from exchanges.profiles import profile
from ratelimit.exchange_limits.kraken import KRAKEN
from sandbox.dialects.kraken_limits import DEFAULTS
from tests.integration.sandbox_fixtures import admin, running_sandbox

pytestmark = pytest.mark.integration

#: Kraken secrets are base64 (ccxt decodes them); a text like "sandbox-secret" cannot sign.
SECRET = base64.b64encode(b"kraken-sandbox-secret-0123456789").decode()
WIDE = {"public_burst": 1000.0, "max_counter": 1000.0, "order_threshold": 1000.0}
PROFILE = profile("kraken")


def kraken(url: str, secret: str = SECRET, key: str = "sandbox-key", **extra: Any) -> Any:
    """Return ccxt.async_support.kraken built as the fleet builds it, at the sandbox."""
    config = ExchangeConfig(ccxt_id="kraken", base_url=url, api_key=key, api_secret=secret)
    return make_exchange("kraken", config, **extra)


def sandbox(**overrides: float) -> Any:
    limits = {"overrides": {**WIDE, **overrides}, "time_scale": 1.0}
    return running_sandbox(dialect="kraken", api_secret=SECRET, limits=limits)


def run(url: str, scenario: Callable[[Any], Awaitable[Any]], **extra: Any) -> Any:
    async def main() -> Any:
        ex = kraken(url, **extra)
        try:
            return await scenario(ex)
        finally:
            await ex.close()

    return asyncio.run(main())


def raw(url: str, path: str) -> tuple[int, dict[str, Any]]:
    with urllib.request.urlopen(url + path, timeout=5) as response:
        return response.status, json.loads(response.read())


def test_markets_and_market_data_through_unmodified_ccxt() -> None:
    async def scenario(ex: Any) -> dict[str, Any]:
        markets = await ex.load_markets()
        return {
            "markets": markets,
            "ticker": await ex.fetch_ticker("BTC/USDT"),
            "tickers": await ex.fetch_tickers(),
            "some": await ex.fetch_tickers(["BTC/USDT", "ETH/USDT"]),
            "book": await ex.fetch_order_book("BTC/USDT", 10),
            "candles": await ex.fetch_ohlcv("ETH/USDT", "5m", limit=12),
            "since": await ex.fetch_ohlcv("BTC/USDT", "1m", since=ex.milliseconds() - 600_000),
        }

    with sandbox() as sb:
        got = run(sb.url, scenario)
        status, pairs = raw(sb.url, "/0/public/AssetPairs?pair=XBTUSDT")
    btc = got["markets"]["BTC/USDT"]
    # XBT is BTC for ccxt (commonCurrencies / Assets altname), the pair id is Kraken's
    assert (btc["id"], btc["altname"], btc["base"], btc["quote"]) == (
        "XBTUSDT",
        "XBTUSDT",
        "BTC",
        "USDT",
    )
    assert btc["spot"] and btc["active"] and btc["precision"]["price"] == 0.01
    assert {"BTC/USDT", "ETH/USDT", "XRP/USDT"} <= set(got["markets"])
    assert status == 200 and pairs["error"] == []
    assert pairs["result"]["XBTUSDT"]["base"] == "XXBT"
    assert pairs["result"]["XBTUSDT"]["wsname"] == "XBT/USDT"
    ticker = got["ticker"]
    assert ticker["symbol"] == "BTC/USDT" and ticker["bid"] < ticker["ask"]
    assert ticker["low"] <= ticker["last"] <= ticker["high"]
    assert set(got["tickers"]) == set(got["markets"]) and set(got["some"]) == {
        "BTC/USDT",
        "ETH/USDT",
    }
    book = got["book"]
    assert len(book["bids"]) == len(book["asks"]) == 10
    assert book["bids"][0][0] < book["asks"][0][0]
    assert len(got["candles"]) == 12
    assert got["candles"][1][0] - got["candles"][0][0] == 300_000
    assert all(c[3] <= c[1] <= c[2] for c in got["candles"])
    assert 9 <= len(got["since"]) <= 12


def test_orders_balance_and_trades_with_the_client_order_id() -> None:
    async def scenario(ex: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"before": await ex.fetch_balance()}
        cid = PROFILE.new_client_order_id()
        out["cid"] = cid
        out["market"] = await ex.create_order(
            "BTC/USDT", "market", "buy", 0.002, None, {"clientOrderId": cid}
        )
        last = (await ex.fetch_ticker("BTC/USDT"))["last"]
        limit_cid = PROFILE.new_client_order_id()
        out["limit_cid"] = limit_cid
        out["limit"] = await ex.create_order(
            "BTC/USDT", "limit", "buy", 0.001, round(last * 0.8, 2), {"clientOrderId": limit_cid}
        )
        out["by_id"] = await ex.fetch_order(out["limit"]["id"])
        out["market_by_id"] = await ex.fetch_order(out["market"]["id"])
        out["during"] = await ex.fetch_balance()
        out["open"] = await ex.fetch_open_orders("BTC/USDT")
        # the profile's lookup: the cl_ord_id filter of OpenOrders / ClosedOrders
        out["open_by_cid"] = await ex.fetch_open_orders(
            "BTC/USDT", params=PROFILE.lookup(limit_cid)
        )
        out["closed_by_cid"] = await ex.fetch_closed_orders("BTC/USDT", params=PROFILE.lookup(cid))
        out["cancel"] = await ex.cancel_order(out["limit"]["id"])
        out["after_cancel"] = await ex.fetch_order(out["limit"]["id"])
        out["open_after"] = await ex.fetch_open_orders("BTC/USDT")
        third = PROFILE.new_client_order_id()
        out["third"] = await ex.create_order(
            "BTC/USDT", "limit", "sell", 0.001, round(last * 1.2, 2), {"clientOrderId": third}
        )
        # CancelOrder by cl_ord_id (ccxt maps params clientOrderId)
        await ex.cancel_order(None, "BTC/USDT", {"clientOrderId": third})
        out["third_after"] = await ex.fetch_order(out["third"]["id"])
        out["trades"] = await ex.fetch_my_trades("BTC/USDT")
        out["after"] = await ex.fetch_balance()
        try:
            await ex.cancel_order(out["limit"]["id"])
        except ccxt.BaseError as exc:
            out["cancel_again"] = exc
        return out

    with sandbox() as sb:
        got = run(sb.url, scenario)
        stats = admin(sb.url, "stats")
    assert len(got["cid"]) == 18 and got["cid"].startswith("cai")
    market, limit = got["market"], got["limit"]
    assert market["clientOrderId"] == got["cid"] and market["id"].startswith("O")
    assert market["symbol"] == "BTC/USDT" and market["side"] == "buy"
    assert market["amount"] == 0.002
    filled = got["market_by_id"]
    assert filled["status"] == "closed" and filled["filled"] == 0.002
    assert filled["clientOrderId"] == got["cid"] and filled["average"] > 0
    assert limit["clientOrderId"] == got["limit_cid"] and limit["type"] == "limit"
    by_id = got["by_id"]
    assert by_id["id"] == limit["id"] and by_id["status"] == "open"
    assert by_id["clientOrderId"] == got["limit_cid"] and by_id["price"] == limit["price"]
    assert [o["id"] for o in got["open"]] == [limit["id"]]
    assert [o["clientOrderId"] for o in got["open_by_cid"]] == [got["limit_cid"]]
    assert [o["id"] for o in got["closed_by_cid"]] == [market["id"]]
    assert got["cancel"]["info"]["result"] == {"count": 1}
    assert got["after_cancel"]["status"] == "canceled" and got["open_after"] == []
    assert isinstance(got["cancel_again"], ccxt.OrderNotFound)  # EOrder:Unknown order
    assert got["third_after"]["status"] == "canceled"
    trades = got["trades"]
    assert trades and all(t["order"] == market["id"] for t in trades)
    assert sum(t["amount"] for t in trades) == pytest.approx(0.002)
    before, during, after = got["before"], got["during"], got["after"]
    assert before["BTC"]["total"] == pytest.approx(0.1) and "XBT" not in before
    assert during["USDT"]["used"] == pytest.approx(0.001 * limit["price"], rel=1e-6)
    assert after["USDT"]["used"] == pytest.approx(0.0)
    assert after["BTC"]["total"] > before["BTC"]["total"]
    assert after["USDT"]["total"] < before["USDT"]["total"]
    assert stats["orders"] == {"sandbox-key": 3} and stats["violations"] == 0


def test_a_wrong_secret_or_key_is_refused_and_a_text_secret_cannot_sign() -> None:
    wrong = base64.b64encode(b"not-the-sandbox-secret-at-all!!!").decode()
    with sandbox() as sb:
        with pytest.raises(ccxt.ExchangeError, match="EAPI:Invalid signature"):
            run(sb.url, lambda ex: ex.fetch_balance(), secret=wrong)
        with pytest.raises(ccxt.AuthenticationError, match="EAPI:Invalid key"):
            run(sb.url, lambda ex: ex.fetch_balance(), key="someone-else")
        # ccxt base64-decodes the secret before signing: "sandbox-secret" is not base64
        with pytest.raises(binascii.Error):
            run(sb.url, lambda ex: ex.fetch_balance(), secret="sandbox-secret")
        calls = admin(sb.url, "stats")["requests_by_endpoint"]
        balance = run(sb.url, lambda ex: ex.fetch_balance())
    assert calls["POST /0/private/BalanceEx"] == 2  # the unsignable call was never sent
    assert balance["USDT"]["total"] == pytest.approx(10000)


def test_a_sandbox_with_a_non_base64_secret_refuses_every_private_call() -> None:
    text = {"limits": {"overrides": WIDE}, "api_secret": "sandbox-secret"}
    with running_sandbox(dialect="kraken", **text) as sb:
        request = urllib.request.Request(
            sb.url + "/0/private/Balance", data=b"nonce=1", method="POST"
        )
        request.add_header("API-Key", "sandbox-key")
        request.add_header("API-Sign", base64.b64encode(b"x" * 64).decode())
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
            assert json.loads(response.read()) == {"error": ["EAPI:Invalid key"]}


def test_a_nonce_that_does_not_grow_is_refused() -> None:
    async def scenario(ex: Any) -> Any:
        await ex.fetch_balance()
        ex.nonce = lambda: 1000  # an older process's clock: below the last nonce seen
        ex.options["lastNonce"] = 0
        return await ex.fetch_balance()

    with sandbox() as sb, pytest.raises(ccxt.InvalidNonce):
        run(sb.url, scenario)
    with sandbox(nonce_window=10**13) as sb:  # Kraken's per-key nonce window
        assert run(sb.url, scenario)["USDT"]["total"] == pytest.approx(10000)


def test_faults_reach_ccxt_as_kraken_errors() -> None:
    with sandbox() as sb:
        run(sb.url, lambda ex: ex.load_markets())
        admin(sb.url, "faults", "PUT", [{"kind": "http_500", "endpoint": "GET /0/public/Ticker"}])
        with pytest.raises(ccxt.ExchangeNotAvailable, match="EGeneral:Internal error"):
            run(sb.url, lambda ex: ex.fetch_ticker("BTC/USDT"))
        admin(sb.url, "faults", "PUT", [{"kind": "http_503", "endpoint": "GET /0/public/Depth"}])
        with pytest.raises(ccxt.ExchangeNotAvailable, match="EService:Unavailable"):
            run(sb.url, lambda ex: ex.fetch_order_book("BTC/USDT"))
        admin(
            sb.url,
            "faults",
            "PUT",
            [{"kind": "malformed_json", "count": 1, "endpoint": "GET /0/public/Ticker"}],
        )

        async def truncated(ex: Any) -> tuple[Any, str]:
            await ex.load_markets()
            return await ex.fetch_ticker("BTC/USDT"), ex.last_http_response

        # ccxt parses a truncated body as text and returns empty fields; the fleet's gateway
        # refuses such an answer (exchanges/endpoints.py check_result)
        ticker, body = run(sb.url, truncated)
        assert ticker["last"] is None and body.startswith('{"error":[],"result":')
        with pytest.raises(MalformedResponseError):
            check_result("fetch_ticker", ticker)
        admin(
            sb.url,
            "faults",
            "PUT",
            [{"kind": "hang", "endpoint": "POST /0/private/BalanceEx", "seconds": 3}],
        )
        started = time.monotonic()
        with pytest.raises(ccxt.RequestTimeout):
            run(sb.url, lambda ex: ex.fetch_balance(), timeout_ms=800)
        assert time.monotonic() - started < 2.5
        admin(sb.url, "faults", "DELETE")
        stats = admin(sb.url, "stats")
    assert stats["faults_injected"]["http_500"] == 1
    assert stats["faults_injected"]["malformed_json"] == 1


def test_the_call_counter_is_kraken_s_and_a_client_that_keeps_going_is_locked_out() -> None:
    async def scenario(ex: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"passed": 0, "errors": []}
        await ex.load_markets()
        for _ in range(3):  # max_counter 4: Balance (1) x3, then TradesHistory (2) > 4
            await ex.fetch_balance()
            out["passed"] += 1
        try:
            await ex.fetch_my_trades()
        except ccxt.BaseError as exc:
            out["history"] = exc
            out["body"] = ex.last_http_response
        await ex.fetch_balance()  # weight 1 still fits (3 + 1 = 4)
        for _ in range(6):  # keep going while limited: lockout_after 3
            try:
                await ex.fetch_balance()
            except ccxt.BaseError as exc:
                out["errors"].append(str(exc))
        await asyncio.sleep(2.2)  # the lockout (lockout_seconds 1) ends, the counter decays
        out["recovered"] = await ex.fetch_balance()
        return out

    with sandbox(max_counter=4, counter_decay=0.5, lockout_after=3, lockout_seconds=1) as sb:
        got = run(sb.url, scenario)
        stats = admin(sb.url, "stats")
    assert got["passed"] == 3
    assert isinstance(got["history"], ccxt.DDoSProtection)
    assert json.loads(got["body"]) == {"error": ["EAPI:Rate limit exceeded"]}
    assert "EAPI:Rate limit exceeded" in got["errors"][0]
    assert any("EGeneral:Temporary lockout" in e for e in got["errors"])
    assert got["recovered"]["USDT"]["total"] == pytest.approx(10000)
    key = stats["clients"]["key:sandbox-key"]
    assert key["rate_limit_exceeded"] >= 3 and key["temporary_lockout"] >= 1
    assert key["lockouts"] == 1
    assert stats["violations"] == key["violations"] >= 4


def test_the_order_rate_counter_and_the_public_limit() -> None:
    async def orders(ex: Any) -> dict[str, Any]:
        await ex.load_markets()
        out: dict[str, Any] = {"placed": 0}
        last = (await ex.fetch_ticker("BTC/USDT"))["last"]
        first = None
        for _ in range(3):  # order_threshold 3: AddOrder +1 each
            order = await ex.create_order("BTC/USDT", "limit", "buy", 0.001, round(last * 0.8))
            first = first or order
            out["placed"] += 1
        try:
            await ex.create_order("BTC/USDT", "limit", "buy", 0.001, round(last * 0.8))
        except ccxt.BaseError as exc:
            out["fourth"] = exc
        try:  # a cancel of a 0-second-old order costs 8 > 3
            await ex.cancel_order(first["id"])
        except ccxt.BaseError as exc:
            out["cancel"] = exc
        out["balance"] = await ex.fetch_balance()  # the call counter is another limiter
        return out

    async def public(ex: Any) -> list[Any]:
        seen: list[Any] = []
        for _ in range(4):
            try:
                seen.append(await ex.publicGetTime())
            except ccxt.BaseError as exc:
                seen.append(exc)
        return seen

    with sandbox(order_threshold=3, order_decay=0.01, public_burst=3, public_rate=0.01) as sb:
        got = run(sb.url, orders)
        admin(sb.url, "reset-limits", "POST")
        seen = run(sb.url, public)
        answer = raw(sb.url, "/0/public/Time")  # the same answer, read raw: HTTP 200
        stats = admin(sb.url, "stats")
    assert got["placed"] == 3
    assert isinstance(got["fourth"], ccxt.DDoSProtection)
    assert "EOrder:Rate limit exceeded" in str(got["fourth"])
    assert "EOrder:Rate limit exceeded" in str(got["cancel"])
    assert got["balance"]["USDT"]["used"] > 0
    assert [isinstance(s, dict) for s in seen] == [True, True, True, False]
    assert isinstance(seen[3], ccxt.DDoSProtection)
    assert "EGeneral:Too many requests" in str(seen[3])
    assert answer == (200, {"error": ["EGeneral:Too many requests"]})
    assert stats["violations"] == 2  # counted again from the reset


def test_the_profile_reads_kraken_s_throttle_answers() -> None:
    read = PROFILE.throttled
    limited = read(200, {}, '{"error":["EAPI:Rate limit exceeded"]}')
    assert limited is not None and limited.pool == "PRIVATE_COUNTER"
    assert limited.retry_after == pytest.approx(6.06, abs=0.01)
    orders = read(200, {}, '{"error":["EOrder:Rate limit exceeded"]}')
    assert orders is not None and (orders.pool, orders.retry_after) == ("ORDER_RATE", 8.0)
    lockout = read(200, {}, '{"error":["EGeneral:Temporary lockout"]}')
    assert lockout is not None and (lockout.pool, lockout.retry_after) == (None, 60.0)
    public = read(200, {}, '{"error":["EGeneral:Too many requests"]}')
    assert public is not None and public.pool == "PUBLIC"
    assert read(200, {}, '{"error":[],"result":{"unixtime":1}}') is None
    assert read(200, {}, '{"error":["EOrder:Unknown order"]}') is None
    proxy = read(429, {"Retry-After": "7"}, "")
    assert proxy is not None and proxy.retry_after == 7.0
    assert PROFILE.missing is None
    # the fleet's table and the sandbox's defaults are the same published model
    counter, orders_pool = KRAKEN.pool("PRIVATE_COUNTER"), KRAKEN.pool("ORDER_RATE")
    assert (counter.limit, counter.rate) == (DEFAULTS["max_counter"], DEFAULTS["counter_decay"])
    assert (orders_pool.limit, orders_pool.rate) == (
        DEFAULTS["order_threshold"],
        DEFAULTS["order_decay"],
    )
    assert KRAKEN.scopes["POST /TradesHistory"] == {"PRIVATE_COUNTER": 2}
    assert {"POST /AddOrder", "POST /CancelOrder"} <= KRAKEN.order_scopes
    assert all(len(PROFILE.new_client_order_id()) == 18 for _ in range(20))  # free text: 18 at most
