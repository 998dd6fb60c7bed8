"""Unmodified ccxt against the sandbox over HTTP: markets, data, orders, balances."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import ccxt
import pytest

from tests.integration.sandbox_fixtures import ccxt_client, running_sandbox

pytestmark = pytest.mark.integration


def test_market_data_agrees_with_the_sandbox_state() -> None:
    async def scenario(url: str, sandbox: Any) -> None:
        ex = ccxt_client(url)
        try:
            markets = await ex.load_markets()
            assert {"BTC/USDT", "ETH/USDT", "SOL/USDT"} <= set(markets)
            assert markets["BTC/USDT"]["precision"]["price"] == 0.01
            assert markets["BTC/USDT"]["limits"]["cost"]["min"] == 5
            ticker = await ex.fetch_ticker("BTC/USDT")
            path = sandbox.paths["BTCUSDT"]
            truth = path.price_at(sandbox.clock.now())
            assert ticker["last"] == pytest.approx(truth, rel=1e-4)
            assert ticker["bid"] < ticker["last"] < ticker["ask"]
            candles = await ex.fetch_ohlcv("BTC/USDT", "1h", limit=5)
            assert len(candles) == 5
            assert all(c[0] % 3_600_000 == 0 for c in candles)
            assert all(c[3] <= min(c[1], c[4]) and max(c[1], c[4]) <= c[2] for c in candles)
            assert candles[-1][4] == pytest.approx(truth, rel=1e-4)
            book = await ex.fetch_order_book("ETH/USDT", 20)
            assert len(book["bids"]) == 20 and len(book["asks"]) == 20
            assert book["bids"][0][0] < book["asks"][0][0]
            assert book["bids"][0][0] > book["bids"][-1][0]
            trades = await ex.fetch_trades("SOL/USDT", limit=10)
            assert len(trades) == 10
        finally:
            await ex.close()

    with running_sandbox() as sandbox:
        asyncio.run(scenario(sandbox.url, sandbox.sandbox))


def test_orders_fill_and_balances_follow() -> None:
    async def scenario(url: str, sandbox: Any) -> None:
        ex = ccxt_client(url)
        try:
            before = (await ex.fetch_balance())["total"]
            bought = await ex.create_order("BTC/USDT", "market", "buy", 0.01)
            assert bought["status"] == "closed" and bought["filled"] == pytest.approx(0.01)
            after = (await ex.fetch_balance())["total"]
            assert after["BTC"] == pytest.approx(before["BTC"] + 0.01 * (1 - 0.001))
            assert after["USDT"] == pytest.approx(before["USDT"] - bought["cost"])

            resting = await ex.create_order("ETH/USDT", "limit", "buy", 0.5, 1000)
            assert resting["status"] == "open"
            locked = (await ex.fetch_balance())["used"]["USDT"]
            assert locked == pytest.approx(500)
            fetched = await ex.fetch_order(resting["id"], "ETH/USDT")
            assert fetched["clientOrderId"] == resting["clientOrderId"]
            assert [o["id"] for o in await ex.fetch_open_orders("ETH/USDT")] == [resting["id"]]
            canceled = await ex.cancel_order(resting["id"], "ETH/USDT")
            assert canceled["status"] == "canceled"
            assert (await ex.fetch_balance())["used"].get("USDT", 0) == 0

            sell = await ex.create_order("ETH/USDT", "limit", "sell", 0.1, 1000)  # marketable
            assert sell["status"] == "closed" and sell["average"] > 1000
            assert len(await ex.fetch_my_trades("ETH/USDT")) >= 1
        finally:
            await ex.close()

    with running_sandbox() as sandbox:
        asyncio.run(scenario(sandbox.url, sandbox.sandbox))


def test_a_market_order_bigger_than_the_book_partially_fills() -> None:
    async def scenario(url: str) -> None:
        ex = ccxt_client(url)
        try:
            order = await ex.create_order("BTC/USDT", "market", "sell", 50)  # the book holds ~32
            assert order["status"] == "expired"
            assert 0 < order["filled"] < 50
        finally:
            await ex.close()

    with running_sandbox(starting_balances={"BTC": 60, "USDT": 0}, symbols=["BTC/USDT"]) as sb:
        asyncio.run(scenario(sb.url))


def test_duplicate_client_order_id_among_open_orders_is_rejected() -> None:
    async def scenario(url: str) -> None:
        ex = ccxt_client(url)
        try:
            params = {"newClientOrderId": "plan-42"}
            await ex.create_order("ETH/USDT", "limit", "buy", 0.1, 1000, params)
            with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):
                await ex.create_order("ETH/USDT", "limit", "buy", 0.1, 1000, params)
            found = await ex.fetch_order(None, "ETH/USDT", {"origClientOrderId": "plan-42"})
            assert found["clientOrderId"] == "plan-42"
        finally:
            await ex.close()

    with running_sandbox() as sb:
        asyncio.run(scenario(sb.url))


@pytest.mark.parametrize(
    ("call", "error", "code"),
    [
        (lambda ex: ex.publicGetTickerPrice({"symbol": "DOGEUSDT"}), ccxt.BadSymbol, "-1121"),
        (
            lambda ex: ex.privatePostOrder(
                {
                    "symbol": "BTCUSDT",
                    "side": "BUY",
                    "type": "LIMIT",
                    "timeInForce": "GTC",
                    "quantity": "0.000015",
                    "price": "100000",
                }
            ),
            ccxt.InvalidOrder,
            "LOT_SIZE",
        ),
        (
            lambda ex: ex.create_order("BTC/USDT", "limit", "buy", 0.00001, 1000),
            ccxt.BadRequest,
            "NOTIONAL",
        ),
        (
            lambda ex: ex.create_order("BTC/USDT", "market", "buy", 5),
            ccxt.InsufficientFunds,
            "insufficient balance",
        ),
        (lambda ex: ex.cancel_order("999", "BTC/USDT"), ccxt.OrderNotFound, "-2011"),
        (lambda ex: ex.fetch_order("999", "BTC/USDT"), ccxt.OrderNotFound, "-2013"),
    ],
)
def test_bad_requests_get_binance_codes_that_ccxt_maps(call: Any, error: type, code: str) -> None:
    async def scenario(url: str) -> None:
        ex = ccxt_client(url)
        try:
            await ex.load_markets()
            with pytest.raises(error) as info:
                await call(ex)
            assert code in str(info.value)
        finally:
            await ex.close()

    with running_sandbox() as sb:
        asyncio.run(scenario(sb.url))


def test_a_bad_signature_is_refused() -> None:
    async def scenario(url: str) -> None:
        ex = ccxt_client(url, secret="not-the-secret")
        try:
            with pytest.raises(ccxt.AuthenticationError, match="-1022"):
                await ex.fetch_balance()
        finally:
            await ex.close()

    with running_sandbox() as sb:
        asyncio.run(scenario(sb.url))


def test_a_stale_timestamp_is_refused_with_1021() -> None:
    async def scenario(url: str) -> None:
        ex = ccxt_client(url)
        ex.nonce = lambda: ex.milliseconds() - 20_000  # a client clock 20 s behind
        try:
            with pytest.raises(ccxt.InvalidNonce, match="-1021"):
                await ex.fetch_balance()
        finally:
            await ex.close()

    with running_sandbox() as sb:
        asyncio.run(scenario(sb.url))


def test_state_survives_a_restart_with_a_state_file(tmp_path: Path) -> None:
    state = tmp_path / "state.json"

    async def place(url: str) -> str:
        ex = ccxt_client(url)
        try:
            order = await ex.create_order("ETH/USDT", "limit", "buy", 0.1, 1000)
            return str(order["id"])
        finally:
            await ex.close()

    async def check(url: str, order_id: str) -> None:
        ex = ccxt_client(url)
        try:
            assert (await ex.fetch_order(order_id, "ETH/USDT"))["status"] == "open"
            assert (await ex.fetch_balance())["used"]["USDT"] == pytest.approx(100)
        finally:
            await ex.close()

    with running_sandbox(state_file=str(state)) as sb:
        order_id = asyncio.run(place(sb.url))
    with running_sandbox(state_file=str(state)) as sb:
        asyncio.run(check(sb.url, order_id))
