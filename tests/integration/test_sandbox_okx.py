"""Unmodified ccxt ``okx`` against the sandbox's OKX v5 dialect over HTTP.

Markets, market data, balances and orders (with OKX's ``clOrdId``), signatures, faults and
OKX's limit model: per endpoint per 2 s, HTTP 429 with code 50011, then a lockout.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import ccxt
import pytest
import redis

from core.config import AppConfig, ExchangeConfig
from core.errors import MalformedResponseError
from exchanges.ccxt_factory import make_exchange
from exchanges.profiles import Throttle, profile
from resilience import FallbackConfig, ResilientAPIClient
from tests.integration.sandbox_fixtures import admin, running_sandbox

pytestmark = pytest.mark.integration

TICKER = "GET /api/v5/market/ticker"
PROFILE = profile("okx")


def okx_client(
    url: str,
    secret: str = "c2FuZGJveC1zZWNyZXRz",
    password: str = "sandbox-passphrase",
    **extra: Any,
) -> Any:
    """Return ccxt.async_support.okx built the way the fleet builds it, at the sandbox."""
    config = ExchangeConfig(
        ccxt_id="okx", base_url=url, api_key="sandbox-key", api_secret=secret, password=password
    )
    ex = make_exchange("okx", config, **extra)
    statuses: list[int] = []
    ex.statuses = statuses

    def on_rest_response(code: int, reason: str, *rest: Any) -> Any:
        statuses.append(code)
        return type(ex).on_rest_response(ex, code, reason, *rest)

    ex.on_rest_response = on_rest_response  # records each answer's HTTP status
    return ex


def test_markets_and_market_data_agree_with_the_sandbox_state() -> None:
    async def scenario(url: str, sandbox: Any) -> None:
        ex = okx_client(url)
        try:
            markets = await ex.load_markets()
            assert set(markets) == {"BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT", "XRP/USDT"}
            btc = markets["BTC/USDT"]
            assert btc["id"] == "BTC-USDT" and btc["spot"] and btc["active"]
            assert btc["precision"] == {"amount": 0.00001, "price": 0.01}
            ticker = await ex.fetch_ticker("BTC/USDT")
            truth = sandbox.paths["BTCUSDT"].price_at(sandbox.clock.now())
            assert ticker["last"] == pytest.approx(truth, rel=1e-4)
            assert ticker["bid"] < ticker["last"] < ticker["ask"]
            assert ticker["baseVolume"] > 0 and ticker["high"] >= ticker["low"]
            tickers = await ex.fetch_tickers()
            assert set(tickers) == set(markets)
            book = await ex.fetch_order_book("ETH/USDT", 20)
            assert len(book["bids"]) == 20 and len(book["asks"]) == 20
            assert book["bids"][0][0] < book["asks"][0][0]
            assert book["bids"][0][0] > book["bids"][-1][0]
            candles = await ex.fetch_ohlcv("BTC/USDT", "1h", limit=5)
            assert len(candles) == 5
            assert all(c[0] % 3_600_000 == 0 for c in candles)
            assert [c[0] for c in candles] == sorted(c[0] for c in candles)
            assert all(c[3] <= min(c[1], c[4]) and max(c[1], c[4]) <= c[2] for c in candles)
            assert candles[-1][4] == pytest.approx(truth, rel=1e-4)
            since = (int(time.time()) // 60 - 30) * 60_000
            recent = await ex.fetch_ohlcv("ETH/USDT", "1m", since=since, limit=10)
            assert [c[0] for c in recent] == [since + i * 60_000 for i in range(10)]
            trades = await ex.fetch_trades("SOL/USDT", limit=10)
            assert len(trades) == 10
        finally:
            await ex.close()
        requests = admin(url, "stats")["requests_by_endpoint"]
        # spot only: one instruments call, no currencies (a private call) or futures lists
        assert requests["GET /api/v5/public/instruments"] == 1
        assert not any("asset/currencies" in e for e in requests)

    with running_sandbox(dialect="okx") as sb:
        asyncio.run(scenario(sb.url, sb.sandbox))


def test_orders_with_client_order_ids_fill_and_balances_follow() -> None:
    async def scenario(url: str) -> None:
        ex = okx_client(url)
        try:
            await ex.load_markets()
            before = (await ex.fetch_balance())["total"]
            cid = PROFILE.new_client_order_id()
            placed = await ex.create_order(
                "BTC/USDT", "market", "buy", 0.01, None, {PROFILE.client_order_param: cid}
            )
            assert placed["clientOrderId"] == cid and placed["id"]
            bought = await ex.fetch_order(placed["id"], "BTC/USDT")
            assert bought["status"] == "closed" and bought["filled"] == pytest.approx(0.01)
            assert bought["clientOrderId"] == cid and bought["fee"]["currency"] == "BTC"
            by_cid = await ex.fetch_order(None, "BTC/USDT", PROFILE.lookup(cid))
            assert by_cid["id"] == placed["id"]
            after = (await ex.fetch_balance())["total"]
            assert after["BTC"] == pytest.approx(before["BTC"] + 0.01 * (1 - 0.001))
            assert after["USDT"] == pytest.approx(before["USDT"] - bought["cost"])

            rest = PROFILE.new_client_order_id()
            resting = await ex.create_order(
                "ETH/USDT", "limit", "buy", 0.5, 1000, {"clientOrderId": rest}
            )
            fetched = await ex.fetch_order(resting["id"], "ETH/USDT")
            assert fetched["status"] == "open" and fetched["price"] == 1000
            assert fetched["clientOrderId"] == rest and fetched["amount"] == 0.5
            assert (await ex.fetch_balance())["used"]["USDT"] == pytest.approx(500)
            assert [o["id"] for o in await ex.fetch_open_orders("ETH/USDT")] == [resting["id"]]
            canceled = await ex.cancel_order(resting["id"], "ETH/USDT")
            assert canceled["id"] == resting["id"] and canceled["clientOrderId"] == rest
            assert (await ex.fetch_order(resting["id"], "ETH/USDT"))["status"] == "canceled"
            assert (await ex.fetch_balance())["used"].get("USDT", 0) == 0
            assert await ex.fetch_open_orders() == []

            sold = await ex.create_order("ETH/USDT", "limit", "sell", 0.1, 1000)  # marketable
            sell = await ex.fetch_order(sold["id"], "ETH/USDT")
            assert sell["status"] == "closed" and sell["average"] > 1000
            mine = await ex.fetch_my_trades("ETH/USDT")
            assert [t["order"] for t in mine] == [sold["id"]] * len(mine)
            assert all(t["side"] == "sell" and t["takerOrMaker"] == "taker" for t in mine)
            assert len(await ex.fetch_my_trades("BTC/USDT")) >= 1

            with pytest.raises(ccxt.OrderNotFound):
                await ex.fetch_order(None, "BTC/USDT", PROFILE.lookup("caiunknown"))
            with pytest.raises(ccxt.OrderNotFound):
                await ex.cancel_order(resting["id"], "ETH/USDT")  # already canceled
            with pytest.raises(ccxt.InvalidOrder):  # 51016: the clOrdId of an open order
                for _ in range(2):
                    await ex.create_order(
                        "ETH/USDT", "limit", "buy", 0.01, 1000, {"clientOrderId": "caidup"}
                    )
            with pytest.raises(ccxt.InsufficientFunds):
                await ex.create_order("BTC/USDT", "market", "buy", 100)
        finally:
            await ex.close()

    with running_sandbox(dialect="okx") as sb:
        asyncio.run(scenario(sb.url))


@pytest.mark.parametrize(
    ("secret", "password", "code"),
    [("wrong-secret", "sandbox-passphrase", "50113"), ("c2FuZGJveC1zZWNyZXRz", "wrong", "50105")],
)
def test_a_wrong_secret_or_passphrase_is_refused(secret: str, password: str, code: str) -> None:
    async def scenario(url: str) -> tuple[int, dict[str, Any]]:
        ex = okx_client(url, secret=secret, password=password)
        try:
            await ex.load_markets()  # public: no signature needed
            with pytest.raises(ccxt.AuthenticationError):
                await ex.fetch_balance()
            return ex.statuses[-1], json.loads(ex.last_http_response)
        finally:
            await ex.close()

    with running_sandbox(dialect="okx") as sb:
        status, body = asyncio.run(scenario(sb.url))
    assert status == 401 and body["code"] == code and body["data"] == []


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("http_500", ccxt.ExchangeNotAvailable),  # 50026, an OperationFailed
        ("http_503", ccxt.OnMaintenance),  # 50001
        ("http_429", ccxt.RateLimitExceeded),  # 50011
        ("hang", ccxt.RequestTimeout),
        ("clock_skew", ccxt.InvalidNonce),  # 50102
    ],
)
def test_each_fault_mode_gives_okx_s_answer(kind: str, error: type) -> None:
    async def scenario(url: str) -> None:
        ex = okx_client(url, timeout_ms=1500)  # under the 3 s hang, over a loaded answer
        try:
            await ex.load_markets()
            rule = {"kind": kind, "endpoint": TICKER, "seconds": 3, "count": 1}
            admin(url, "faults", "PUT", [rule])
            with pytest.raises(error):
                await ex.fetch_ticker("BTC/USDT")
            assert issubclass(error, ccxt.OperationFailed)
            assert (await ex.fetch_ticker("BTC/USDT"))["last"] > 0, "count=1: the next call works"
        finally:
            await ex.close()

    with running_sandbox(dialect="okx") as sb:
        asyncio.run(scenario(sb.url))
        stats = admin(sb.url, "stats")
    assert stats["faults_injected"] == {kind: 1}
    assert stats["violations"] == (1 if kind == "http_429" else 0)


def test_malformed_json_is_a_malformed_response_through_the_fleets_gateway(
    redis_client: redis.Redis, namespace: str
) -> None:
    faults = [{"kind": "malformed_json", "endpoint": TICKER, "rate": 1.0}]
    with running_sandbox(dialect="okx", faults=faults) as sb:
        config = AppConfig.model_validate(
            {
                "redis": {"key_prefix": namespace},
                "exchanges": {"okx": {"base_url": sb.url}},
                "retry_strategies": {"default": {"max_attempts": 1}},
            }
        )
        client = ResilientAPIClient(redis_client, config)

        async def ask() -> BaseException | None:
            try:
                await client.resilient_request(
                    "okx", "fetch_ticker", {"symbol": "BTC/USDT"}, FallbackConfig(level="none")
                )
            except Exception as exc:  # the test judges it
                return exc
            finally:
                await client.close()
            return None

        error = asyncio.run(ask())
    chain = []
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    assert any(isinstance(e, MalformedResponseError) for e in chain), chain


def test_over_an_endpoint_budget_gets_429_50011_then_a_lockout() -> None:
    limits = {
        "overrides": {"market_ticker_per_2s": 5, "lockout_after": 3, "lockout_seconds": 4},
    }

    async def scenario(url: str) -> dict[str, Any]:
        ex = okx_client(url)
        seen: dict[str, Any] = {}
        try:
            await ex.load_markets()
            for _ in range(5):
                await ex.fetch_ticker("BTC/USDT")
            with pytest.raises(ccxt.RateLimitExceeded):
                await ex.fetch_ticker("BTC/USDT")
            seen["status"] = ex.statuses[-1]
            seen["body"] = json.loads(ex.last_http_response)
            seen["throttle"] = PROFILE.throttled(
                ex.statuses[-1], ex.last_response_headers, ex.last_http_response
            )
            # the budget is per endpoint: the order book and the tickers list still answer
            assert len((await ex.fetch_order_book("BTC/USDT", 5))["bids"]) == 5
            assert len(await ex.fetch_tickers()) == 5
            for _ in range(2):  # still sending inside the window: locked out
                with pytest.raises(ccxt.RateLimitExceeded):
                    await ex.fetch_ticker("BTC/USDT")
            await asyncio.sleep(2.2)  # the window has passed, the lockout (4 s) has not
            with pytest.raises(ccxt.RateLimitExceeded):
                await ex.fetch_ticker("BTC/USDT")
            await asyncio.sleep(2.2)
            assert (await ex.fetch_ticker("BTC/USDT"))["last"] > 0
        finally:
            await ex.close()
        return seen

    with running_sandbox(dialect="okx", limits=limits) as sb:
        seen = asyncio.run(scenario(sb.url))
        stats = admin(sb.url, "stats")
    assert seen["status"] == 429
    assert seen["body"] == {"code": "50011", "msg": "Too Many Requests", "data": []}
    assert seen["throttle"] == Throttle(429, 2.0, None)
    client = stats["clients"]["127.0.0.1"]
    assert client["sent_429"] == 4 and client["lockouts"] == 1
    assert stats["violations"] == 4


def test_private_budgets_count_per_user_and_the_account_order_limit_is_reported() -> None:
    limits = {"overrides": {"account_balance_per_2s": 2, "account_orders_per_2s": 2}}

    async def scenario(url: str) -> dict[str, Any]:
        ex = okx_client(url)
        seen: dict[str, Any] = {}
        try:
            await ex.load_markets()
            rate = await ex.privateGetTradeAccountRateLimit()
            seen["rate"] = rate
            seen["accRateLimit"] = rate["data"][0]["accRateLimit"]
            for _ in range(2):
                await ex.fetch_balance()
            with pytest.raises(ccxt.RateLimitExceeded):
                await ex.fetch_balance()
            for _ in range(2):
                await ex.create_order("ETH/USDT", "limit", "buy", 0.01, 1000)
            with pytest.raises(ccxt.ExchangeError, match="50061"):
                await ex.create_order("ETH/USDT", "limit", "buy", 0.01, 1000)
            seen["throttle"] = PROFILE.throttled(
                ex.statuses[-1], ex.last_response_headers, ex.last_http_response
            )
        finally:
            await ex.close()
        return seen

    with running_sandbox(dialect="okx", limits=limits) as sb:
        seen = asyncio.run(scenario(sb.url))
        stats = admin(sb.url, "stats")
    assert seen["accRateLimit"] == "2"
    # as OKX documents it ("Get account rate limit") for an account below VIP 5
    rate = seen["rate"]
    assert (rate["code"], rate["msg"], len(rate["data"])) == ("0", "", 1)
    row = rate["data"][0]
    assert set(row) == {"accRateLimit", "fillRatio", "mainFillRatio", "nextAccRateLimit", "ts"}
    assert row["fillRatio"] == row["mainFillRatio"] == row["nextAccRateLimit"] == ""
    assert abs(int(row["ts"]) / 1000 - time.time()) < 60
    assert seen["throttle"] == Throttle(200, 2.0, "ACCOUNT_ORDERS")
    assert stats["orders"] == {"sandbox-key": 2}
    assert stats["violations"] == 2
