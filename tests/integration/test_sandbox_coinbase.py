"""The Coinbase Advanced Trade dialect, as unmodified ccxt (and a raw HTTP client) sees it."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from typing import Any

import ccxt
import pytest

from core.config import ExchangeConfig
from core.errors import MalformedResponseError
from exchanges.ccxt_factory import make_exchange
from exchanges.endpoints import check_result
from exchanges.profiles import profile
from tests.integration.sandbox_fixtures import admin, running_sandbox

pytestmark = pytest.mark.integration

PROFILE = profile("coinbase")
TICKER = "GET /api/v3/brokerage/market/products/BTC-USDT/ticker"


def coinbase(url: str, secret: str = "c2FuZGJveC1zZWNyZXRz", **extra: Any) -> Any:
    """Return ccxt.async_support.coinbase built as the fleet builds it."""
    config = ExchangeConfig(
        ccxt_id="coinbase",
        base_url=url,
        api_key="sandbox-key",
        api_secret=secret,
        password="sandbox-passphrase",
    )
    return make_exchange("coinbase", config, **extra)


def raw(url: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url + path, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_unmodified_ccxt_does_every_call_the_fleet_makes() -> None:
    async def scenario(url: str) -> dict[str, Any]:
        ex = coinbase(url)
        seen: dict[str, Any] = {}
        try:
            markets = await ex.load_markets()
            seen["markets"] = markets
            seen["ticker"] = await ex.fetch_ticker("BTC/USDT")
            seen["tickers"] = await ex.fetch_tickers()
            seen["some_tickers"] = await ex.fetch_tickers(["ETH/USDT", "SOL/USDT"])
            seen["book"] = await ex.fetch_order_book("BTC/USDT", 10)
            seen["ohlcv"] = await ex.fetch_ohlcv("BTC/USDT", "5m", limit=12)
            seen["balance"] = await ex.fetch_balance()
            # a market buy is quoted in base units with a price, as the gate sends it: ccxt
            # spends amount * price (here 60 USDT) as market_market_ioc.quote_size
            eth = seen["ticker"]["last"] if seen["ticker"]["symbol"] == "ETH/USDT" else None
            eth = eth or (await ex.fetch_ticker("ETH/USDT"))["last"]
            seen["market"] = await ex.create_order(
                "ETH/USDT",
                "market",
                "buy",
                60 / eth,
                eth,
                params={"client_order_id": "cai-market-1"},
            )
            price = round(seen["ticker"]["last"] * 0.97, 2)
            seen["limit"] = await ex.create_order(
                "BTC/USDT", "limit", "buy", 0.001, price, params={"client_order_id": "cai-lim-1"}
            )
            seen["by_id"] = await ex.fetch_order(seen["limit"]["id"], "BTC/USDT")
            seen["by_cid"] = await ex.fetch_order(None, "BTC/USDT", PROFILE.lookup("cai-lim-1"))
            seen["open"] = await ex.fetch_open_orders("BTC/USDT")
            seen["cancel"] = await ex.cancel_order(seen["limit"]["id"], "BTC/USDT")
            seen["canceled"] = await ex.fetch_order(seen["limit"]["id"], "BTC/USDT")
            seen["open_after"] = await ex.fetch_open_orders()
            seen["market_order"] = await ex.fetch_order(seen["market"]["id"], "ETH/USDT")
            seen["trades"] = await ex.fetch_my_trades("ETH/USDT")
            seen["balance_after"] = await ex.fetch_balance()
            seen["sign_header"] = dict(ex.last_request_headers)
        finally:
            await ex.close()
        return seen

    with running_sandbox(dialect="coinbase") as sb:
        seen = asyncio.run(scenario(sb.url))
        stats = admin(sb.url, "stats")

    markets = seen["markets"]
    assert set(markets) == {"BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT", "XRP/USDT"}
    btc = markets["BTC/USDT"]
    assert btc["id"] == "BTC-USDT" and btc["spot"] and btc["precision"]["price"] == 0.01
    assert btc["precision"]["amount"] == 0.00001 and btc["limits"]["cost"]["min"] == 5
    assert btc["taker"] == 0.001  # the transaction summary's fee tier (the sandbox fee)
    ticker = seen["ticker"]
    assert ticker["symbol"] == "BTC/USDT" and ticker["bid"] < ticker["ask"]
    assert ticker["last"] > 0 and ticker["timestamp"] is not None
    assert set(seen["tickers"]) == set(markets)
    assert all(t["last"] > 0 and t["baseVolume"] > 0 for t in seen["tickers"].values())
    assert set(seen["some_tickers"]) == {"ETH/USDT", "SOL/USDT"}
    book = seen["book"]
    assert len(book["bids"]) == 10 and book["bids"][0][0] < book["asks"][0][0]
    ohlcv = seen["ohlcv"]
    assert 11 <= len(ohlcv) <= 12 and ohlcv[1][0] - ohlcv[0][0] == 300_000
    assert all(row[3] <= min(row[1], row[4]) <= max(row[1], row[4]) <= row[2] for row in ohlcv)
    assert seen["balance"]["free"]["USDT"] == 10000 and seen["balance"]["total"]["BTC"] == 0.1

    market = seen["market"]
    assert market["clientOrderId"] == "cai-market-1" and market["id"]
    assert seen["market_order"]["status"] == "closed"
    assert seen["market_order"]["filled"] > 0
    limit = seen["limit"]
    assert limit["clientOrderId"] == "cai-lim-1" and limit["side"] == "buy"
    by_id = seen["by_id"]
    assert by_id["status"] == "open" and by_id["type"] == "limit"
    assert by_id["timeInForce"] == "GTC" and by_id["amount"] == 0.001
    assert seen["by_cid"]["id"] == limit["id"]
    assert [o["id"] for o in seen["open"]] == [limit["id"]]
    assert seen["cancel"]["id"] == limit["id"]
    assert seen["canceled"]["status"] == "canceled" and seen["open_after"] == []
    trades = seen["trades"]
    assert trades and all(t["side"] == "buy" and t["takerOrMaker"] == "taker" for t in trades)
    assert all(t["order"] == market["id"] and t["fee"]["currency"] == "USDT" for t in trades)
    spent = sum(t["cost"] for t in trades)
    assert 59 < spent <= 60
    assert seen["balance_after"]["total"]["USDT"] == pytest.approx(10000 - spent, abs=1e-6)
    assert seen["balance_after"]["total"]["ETH"] > 2.0
    # ccxt signs with the legacy HMAC headers: the sandbox secret is not a PEM (no JWT)
    headers = seen["sign_header"]
    assert {"CB-ACCESS-KEY", "CB-ACCESS-SIGN", "CB-ACCESS-TIMESTAMP"} <= set(headers)
    assert "Authorization" not in headers
    assert stats["orders"] == {"sandbox-key": 2} and stats["violations"] == 0
    # load_markets reads the v2 lists (no option turns that off) and no futures endpoint
    calls = stats["requests_by_endpoint"]
    assert calls["GET /v2/currencies"] == 1 and calls["GET /v2/exchange-rates"] == 1
    assert not any("cfm" in e or "/v2/accounts" in e for e in calls)


def test_client_order_ids_ccxt_drops_clientOrderId_and_a_reused_id_returns_its_order() -> None:
    async def scenario(url: str) -> tuple[Any, Any, Any, Any]:
        ex = coinbase(url)
        try:
            await ex.load_markets()
            price = round((await ex.fetch_ticker("ETH/USDT"))["last"] * 0.9, 2)
            # ccxt 4.5.90 omits params.clientOrderId and sends "ccxt-<uuid>" instead
            dropped = await ex.create_order(
                "ETH/USDT", "limit", "buy", 0.01, price, params={"clientOrderId": "cai-lost"}
            )
            dropped = await ex.fetch_order(dropped["id"], "ETH/USDT")
            cid = PROFILE.new_client_order_id()
            first = await ex.create_order(
                "ETH/USDT", "limit", "buy", 0.01, price, params={PROFILE.client_order_param: cid}
            )
            again = await ex.create_order(
                "ETH/USDT", "limit", "buy", 0.01, price, params={PROFILE.client_order_param: cid}
            )
            missing = None
            try:
                await ex.fetch_order(None, "ETH/USDT", PROFILE.lookup("cai-never-placed"))
            except ccxt.BaseError as exc:
                missing = exc
            return dropped, first, again, missing
        finally:
            await ex.close()

    with running_sandbox(dialect="coinbase") as sb:
        dropped, first, again, missing = asyncio.run(scenario(sb.url))
        stats = admin(sb.url, "stats")
    assert dropped["clientOrderId"].startswith("ccxt-")
    assert first["id"] == again["id"] and first["clientOrderId"].startswith("cai")
    assert stats["orders"] == {"sandbox-key": 2}
    # Coinbase's not-found body; ccxt raises ExchangeError, not OrderNotFound (see profile)
    assert type(missing) is ccxt.ExchangeError
    assert "order with this orderID was not found" in str(missing)


def test_order_failures_are_http_200_success_false_mapped_by_ccxt() -> None:
    async def scenario(url: str) -> list[type[BaseException]]:
        ex = coinbase(url)
        raised = []
        try:
            await ex.load_markets()
            for cost in (500_000, 1):  # more USDT than the account has; under 5 USDT
                try:
                    await ex.create_order("BTC/USDT", "market", "buy", cost / 100, 100)
                except ccxt.BaseError as exc:
                    raised.append(type(exc))
            body = await ex.v3PrivatePostBrokerageOrders(
                {
                    "client_order_id": "cai-raw",
                    "product_id": "BTC-USDT",
                    "side": "BUY",
                    "order_configuration": {"market_market_ioc": {"quote_size": "900000"}},
                }
            )
        except ccxt.InsufficientFunds as exc:
            raised.append(type(exc))
            body = json.loads(ex.last_http_response)
        finally:
            await ex.close()
        assert ex.last_http_response and body["success"] is False
        assert body["error_response"]["error"] == "INSUFFICIENT_FUND"
        return raised

    with running_sandbox(dialect="coinbase") as sb:
        raised = asyncio.run(scenario(sb.url))
        stats = admin(sb.url, "stats")
    assert raised == [ccxt.InsufficientFunds, ccxt.ExchangeError, ccxt.InsufficientFunds]
    assert stats["orders"] == {}


def test_the_signature_is_checked_and_a_wrong_secret_is_refused() -> None:
    async def wrong(url: str) -> BaseException | None:
        ex = coinbase(url, secret="not-the-secret")
        try:
            await ex.fetch_balance()
        except ccxt.BaseError as exc:
            return exc
        finally:
            await ex.close()
        return None

    with running_sandbox(dialect="coinbase") as sb:
        refused = asyncio.run(wrong(sb.url))
        path = "/api/v3/brokerage/accounts"
        stamp = str(int(time.time()))

        def signed(secret: str, at: str = stamp, signed_path: str = path) -> dict[str, str]:
            payload = f"{at}GET{signed_path}".encode()
            return {
                "CB-ACCESS-KEY": "sandbox-key",
                "CB-ACCESS-TIMESTAMP": at,
                "CB-ACCESS-SIGN": hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest(),
            }

        ok = raw(sb.url, path + "?limit=5", signed("c2FuZGJveC1zZWNyZXRz"))
        bad = raw(sb.url, path, signed("sandbox-secre"))
        stale = raw(sb.url, path, signed("c2FuZGJveC1zZWNyZXRz", str(int(time.time()) - 60)))
        unsigned = raw(sb.url, path)
        other_path = raw(sb.url, path, signed("c2FuZGJveC1zZWNyZXRz", signed_path="/api/v3/x"))
    assert isinstance(refused, ccxt.AuthenticationError)
    assert ok[0] == 200 and len(json.loads(ok[1])["accounts"]) == 3
    for status, body in (bad, stale, unsigned, other_path):
        assert (status, body.strip()) == (401, "Unauthorized")


def test_faults_500_503_malformed_and_hang() -> None:
    async def scenario(url: str) -> dict[str, Any]:
        ex = coinbase(url, timeout_ms=1000)
        seen: dict[str, Any] = {}
        try:
            await ex.load_markets()
            for kind in ("http_500", "http_503", "hang"):
                fault = {"kind": kind, "count": 1, "endpoint": TICKER, "seconds": 2}
                admin(url, "faults", "PUT", [fault])
                try:
                    await ex.fetch_ticker("BTC/USDT")
                except ccxt.BaseError as exc:
                    seen[kind] = exc
            admin(
                url, "faults", "PUT", [{"kind": "malformed_json", "count": 1, "endpoint": TICKER}]
            )
            ticker = await ex.fetch_ticker("BTC/USDT")
            try:
                check_result("fetch_ticker", ticker)  # the fleet gateway's check of answers
            except MalformedResponseError as exc:
                seen["malformed"] = exc
            seen["raw"] = ex.last_http_response
            seen["after"] = await ex.fetch_ticker("BTC/USDT")
        finally:
            await ex.close()
        return seen

    with running_sandbox(dialect="coinbase") as sb:
        seen = asyncio.run(scenario(sb.url))
        stats = admin(sb.url, "stats")
    assert type(seen["http_500"]) is ccxt.ExchangeError and "INTERNAL" in str(seen["http_500"])
    assert isinstance(seen["http_503"], ccxt.ExchangeNotAvailable)
    assert isinstance(seen["hang"], ccxt.RequestTimeout)
    assert isinstance(seen["malformed"], MalformedResponseError)
    assert seen["raw"].startswith('{"trades": [') and not seen["raw"].endswith("}")
    assert seen["after"]["last"] > 0
    assert stats["faults_injected"] == {
        "http_500": 1,
        "http_503": 1,
        "hang": 1,
        "malformed_json": 1,
    }


def test_over_the_public_limit_429_then_a_lockout_for_a_client_that_keeps_going() -> None:
    limits = {"overrides": {"public_per_second": 5, "lockout_after": 8, "lockout_seconds": 4}}

    async def scenario(url: str) -> dict[str, Any]:
        ex = coinbase(url)
        seen: dict[str, Any] = {"ok": 0, "refused": []}
        try:
            await ex.load_markets()
            await asyncio.sleep(1.1)  # a full bucket
            started = time.time()
            while time.time() - started < 1.0:
                try:
                    await ex.v3PublicGetBrokerageMarketProductsProductIdTicker(
                        {"product_id": "BTC-USDT", "limit": 1}
                    )
                    seen["ok"] += 1
                except ccxt.BaseError as exc:
                    seen["refused"].append(exc)
                    seen.setdefault("status", ex.last_http_response)
            await asyncio.sleep(1.5)  # the bucket refilled, but the lockout has not ended
            try:
                await ex.fetch_ticker("BTC/USDT")
                seen["locked"] = False
            except ccxt.RateLimitExceeded:
                seen["locked"] = True
            await asyncio.sleep(2.5)  # 5 s after the burst: the lockout is over
            seen["after"] = (await ex.fetch_ticker("BTC/USDT"))["last"]
        finally:
            await ex.close()
        return seen

    with running_sandbox(dialect="coinbase", limits=limits) as sb:
        seen = asyncio.run(scenario(sb.url))
        stats = admin(sb.url, "stats")
    # a burst of 5, then 429s: 8 refused in a row start a 4 s lockout
    assert 5 <= seen["ok"] <= 5 + 2
    assert seen["refused"] and all(isinstance(e, ccxt.RateLimitExceeded) for e in seen["refused"])
    assert json.loads(seen["status"]) == {"message": "Rate limit exceeded"}
    assert seen["locked"] is True and seen["after"] > 0
    client = stats["clients"]["127.0.0.1"]
    assert client["lockouts"] == 1 and client["requests_inside_lockout"] >= 1
    assert stats["violations"] == client["sent_429"] >= len(seen["refused"])


def test_private_limit_is_per_key_and_separate_from_the_ip_public_one() -> None:
    limits = {"overrides": {"private_per_second": 3, "v2_per_hour": 3}}

    async def scenario(url: str) -> dict[str, Any]:
        ex = coinbase(url)
        seen: dict[str, Any] = {}
        try:
            await ex.load_markets()  # 3 v2 calls: the v2 hourly budget is spent
            await asyncio.sleep(1.1)
            answers = await asyncio.gather(
                *(ex.fetch_balance() for _ in range(5)), return_exceptions=True
            )
            seen["private"] = answers
            seen["public"] = await ex.fetch_ticker("BTC/USDT")  # the IP's bucket is not spent
            try:
                await ex.load_markets(reload=True)
            except ccxt.BaseError as exc:
                seen["v2"] = exc
                seen["v2_body"] = ex.last_http_response
        finally:
            await ex.close()
        return seen

    with running_sandbox(dialect="coinbase", limits=limits) as sb:
        seen = asyncio.run(scenario(sb.url))
        stats = admin(sb.url, "stats")
    refused = [a for a in seen["private"] if isinstance(a, BaseException)]
    assert len(refused) == 2 and all(isinstance(e, ccxt.RateLimitExceeded) for e in refused)
    assert seen["public"]["last"] > 0
    assert isinstance(seen["v2"], ccxt.RateLimitExceeded)
    assert json.loads(seen["v2_body"])["errors"][0]["id"] == "rate_limit_exceeded"
    assert stats["clients"]["key:sandbox-key"]["sent_429"] == 2
    assert stats["clients"]["127.0.0.1"]["sent_429"] == 3  # the 3 v2 lists, asked at once


def test_the_profile_reads_429_as_a_fleet_wide_throttle() -> None:
    throttle = PROFILE.throttled(429, {}, '{"message": "Rate limit exceeded"}')
    assert throttle is not None and throttle.status == 429 and throttle.pool is None
    assert throttle.retry_after is None  # Coinbase documents no Retry-After
    assert PROFILE.throttled(200, {}, '{"trades": []}') is None
    assert PROFILE.throttled(400, {}, '{"error": "INVALID_ARGUMENT"}') is None
    cid = PROFILE.new_client_order_id()
    assert cid.startswith("cai") and len(cid) == 32
    assert PROFILE.missing is None
