"""Binance's protective orders on the sandbox, placed with unmodified ccxt over HTTP.

Stop-loss and take-profit orders wait off the book until the sandbox's price path crosses
their stop, then fire once at the first trade at or beyond it; OCO lists cancel one leg when
the other fires or fills. ``PUT /sandbox/price`` moves the price so each test crosses a stop
on purpose (and jumps past it, as a gap between two trades would).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import ccxt
import pytest

from sandbox.admin import set_price
from sandbox.market import TRADE_INTERVAL, PricePath
from tests.integration.sandbox_fixtures import ccxt_client, running_sandbox

pytestmark = pytest.mark.integration

SYMBOL, MARKET_ID = "ETH/USDT", "ETHUSDT"


def run(scenario: Callable[[Any, str, Callable[[float], float]], Awaitable[None]]) -> None:
    """Run ``scenario(ccxt, url, at)`` on a fresh sandbox; ``at(0.97)`` is 97% of the price."""
    with running_sandbox() as thread:
        sandbox = thread.sandbox
        start = sandbox.paths[MARKET_ID].price_at(sandbox.clock.now())

        def at(fraction: float) -> float:
            return round(start * fraction, 2)

        async def main() -> None:
            ex = ccxt_client(thread.url)
            try:
                await ex.load_markets()
                await scenario(ex, thread.url, at)
            finally:
                await ex.close()

        asyncio.run(main())


def move(url: str, price: float) -> dict[str, Any]:
    result: dict[str, Any] = set_price(url, SYMBOL, price)
    return result


def test_a_stop_loss_limit_sell_waits_then_fires_once_through_a_gap() -> None:
    async def scenario(ex: Any, url: str, at: Callable[[float], float]) -> None:
        eth = (await ex.fetch_balance())["total"]["ETH"]
        order = await ex.create_order(
            SYMBOL, "STOP_LOSS_LIMIT", "sell", 0.5, at(0.95), {"stopPrice": at(0.97)}
        )
        assert order["status"] == "open" and order["filled"] == 0
        move(url, at(0.99))  # above the stop: nothing happens
        held = await ex.fetch_order(order["id"], SYMBOL)
        assert held["status"] == "open" and held["triggerPrice"] == at(0.97)
        assert held["info"]["isWorking"] is False and held["info"]["workingTime"] == -1
        assert [o["id"] for o in await ex.fetch_open_orders(SYMBOL)] == [order["id"]]
        assert (await ex.fetch_balance())["used"]["ETH"] == pytest.approx(0.5)

        fired = move(url, at(0.96))  # from 99% straight to 96%: past the stop, above the limit
        assert [o["orderId"] for o in fired["orders"]] == [int(order["id"])]
        done = await ex.fetch_order(order["id"], SYMBOL)
        assert done["status"] == "closed" and done["filled"] == pytest.approx(0.5)
        assert done["clientOrderId"] == order["clientOrderId"]
        assert at(0.95) < done["average"] < at(0.97)
        assert done["average"] == pytest.approx(at(0.96), rel=2e-3)

        move(url, at(0.90))
        move(url, at(0.96))
        trades = [t for t in await ex.fetch_my_trades(SYMBOL) if t["order"] == order["id"]]
        assert sum(t["amount"] for t in trades) == pytest.approx(0.5)  # filled exactly once
        balance = await ex.fetch_balance()
        assert balance["total"]["ETH"] == pytest.approx(eth - 0.5)
        assert balance["used"].get("ETH", 0) == 0
        assert await ex.fetch_open_orders(SYMBOL) == []

    run(scenario)


def test_a_stop_limit_gapped_past_its_limit_rests_until_the_price_comes_back() -> None:
    async def scenario(ex: Any, url: str, at: Callable[[float], float]) -> None:
        order = await ex.create_order(
            SYMBOL, "STOP_LOSS_LIMIT", "sell", 0.5, at(0.96), {"stopPrice": at(0.97)}
        )
        move(url, at(0.94))  # past the stop and the limit in one jump
        resting = await ex.fetch_order(order["id"], SYMBOL)
        assert resting["status"] == "open" and resting["filled"] == 0
        assert resting["info"]["isWorking"] is True and resting["info"]["workingTime"] > 0
        move(url, at(0.965))
        done = await ex.fetch_order(order["id"], SYMBOL)
        assert done["status"] == "closed" and done["average"] == pytest.approx(at(0.96))

    run(scenario)


def test_a_market_stop_fills_at_the_price_it_gapped_to_not_at_the_stop() -> None:
    async def scenario(ex: Any, url: str, at: Callable[[float], float]) -> None:
        order = await ex.create_order(
            SYMBOL, "STOP_LOSS", "sell", 0.5, None, {"stopPrice": at(0.97)}
        )
        assert order["status"] == "open"
        move(url, at(0.90))
        done = await ex.fetch_order(order["id"], SYMBOL)
        assert done["status"] == "closed" and done["filled"] == pytest.approx(0.5)
        assert done["average"] == pytest.approx(at(0.90), rel=2e-3)

    run(scenario)


def test_take_profits_fire_on_the_right_side_of_the_price() -> None:
    async def scenario(ex: Any, url: str, at: Callable[[float], float]) -> None:
        sell = await ex.create_order(
            SYMBOL, "TAKE_PROFIT_LIMIT", "sell", 0.5, at(1.02), {"stopPrice": at(1.03)}
        )
        buy = await ex.create_order(
            SYMBOL, "TAKE_PROFIT", "buy", 0.5, None, {"stopPrice": at(0.97)}
        )
        move(url, at(0.98))
        move(url, at(1.02))  # neither reached: the sell needs 103%, the buy 97%
        statuses = {o["id"]: o["status"] for o in await ex.fetch_open_orders(SYMBOL)}
        assert statuses == {sell["id"]: "open", buy["id"]: "open"}
        move(url, at(1.05))
        done = await ex.fetch_order(sell["id"], SYMBOL)
        assert done["status"] == "closed" and done["average"] == pytest.approx(at(1.05), rel=2e-3)
        move(url, at(0.96))
        bought = await ex.fetch_order(buy["id"], SYMBOL)
        assert bought["status"] == "closed"
        assert bought["average"] == pytest.approx(at(0.96), rel=2e-3)

    run(scenario)


def test_stop_orders_are_refused_as_binance_refuses_them() -> None:
    async def scenario(ex: Any, url: str, at: Callable[[float], float]) -> None:
        with pytest.raises(ccxt.InvalidOrder, match="Order would trigger immediately"):
            await ex.create_order(
                SYMBOL, "STOP_LOSS_LIMIT", "sell", 0.5, at(0.99), {"stopPrice": at(1.01)}
            )
        with pytest.raises(ccxt.InvalidOrder, match="Order would trigger immediately"):
            await ex.create_order(SYMBOL, "TAKE_PROFIT", "sell", 0.5, None, {"stopPrice": at(0.99)})
        base = {"symbol": MARKET_ID, "side": "SELL", "quantity": "0.5"}
        with pytest.raises(ccxt.BadRequest, match="'stopPrice' or 'trailingDelta' must be sent"):
            await ex.privatePostOrder(base | {"type": "STOP_LOSS"})
        with pytest.raises(ccxt.BadRequest, match="Parameter 'price' sent when not required"):
            await ex.privatePostOrder(
                base | {"type": "STOP_LOSS", "stopPrice": str(at(0.9)), "price": str(at(0.9))}
            )
        with pytest.raises(ccxt.BadRequest, match="Mandatory parameter 'timeInForce'"):
            await ex.privatePostOrder(
                base | {"type": "STOP_LOSS_LIMIT", "stopPrice": str(at(0.9)), "price": "1"}
            )
        assert await ex.fetch_open_orders(SYMBOL) == []

    run(scenario)


def _oco(at: Callable[[float], float], tag: str) -> dict[str, str]:
    return {
        "symbol": MARKET_ID,
        "side": "SELL",
        "quantity": "0.5",
        "listClientOrderId": f"protect-{tag}",
        "aboveType": "LIMIT_MAKER",
        "abovePrice": str(at(1.03)),
        "aboveClientOrderId": f"tp-{tag}",
        "belowType": "STOP_LOSS_LIMIT",
        "belowStopPrice": str(at(0.97)),
        "belowPrice": str(at(0.95)),
        "belowTimeInForce": "GTC",
        "belowClientOrderId": f"sl-{tag}",
    }


async def _legs(ex: Any, placed: dict[str, Any]) -> dict[str, dict[str, Any]]:
    ids = {o["clientOrderId"]: o["orderId"] for o in placed["orders"]}
    return {c: await ex.fetch_order(str(i), SYMBOL) for c, i in ids.items()}


def test_an_oco_whose_stop_fires_expires_its_take_profit() -> None:
    async def scenario(ex: Any, url: str, at: Callable[[float], float]) -> None:
        eth = (await ex.fetch_balance())["total"]["ETH"]
        placed = await ex.privatePostOrderListOco(_oco(at, "a"))
        assert placed["contingencyType"] == "OCO" and placed["listClientOrderId"] == "protect-a"
        assert placed["listOrderStatus"] == "EXECUTING"
        assert {o["clientOrderId"] for o in placed["orders"]} == {"tp-a", "sl-a"}
        assert {r["type"] for r in placed["orderReports"]} == {"LIMIT_MAKER", "STOP_LOSS_LIMIT"}
        open_orders = await ex.fetch_open_orders(SYMBOL)
        assert {o["clientOrderId"] for o in open_orders} == {"tp-a", "sl-a"}
        assert {o["info"]["orderListId"] for o in open_orders} == {placed["orderListId"]}
        assert (await ex.fetch_balance())["used"]["ETH"] == pytest.approx(0.5)  # one lock
        assert len(await ex.privateGetOpenOrderList()) == 1

        move(url, at(0.96))
        legs = await _legs(ex, placed)
        assert legs["sl-a"]["status"] == "closed" and legs["sl-a"]["filled"] == pytest.approx(0.5)
        assert legs["tp-a"]["status"] == "expired" and legs["tp-a"]["filled"] == 0
        listed = await ex.privateGetOrderList({"orderListId": placed["orderListId"]})
        assert listed["listOrderStatus"] == "ALL_DONE"
        by_client_id = await ex.privateGetOrderList({"origClientOrderId": "protect-a"})
        assert by_client_id["orderListId"] == placed["orderListId"]
        assert await ex.privateGetOpenOrderList() == []
        move(url, at(1.05))  # the expired take-profit never fills afterwards
        balance = await ex.fetch_balance()
        assert balance["total"]["ETH"] == pytest.approx(eth - 0.5)
        assert balance["used"].get("ETH", 0) == 0

    run(scenario)


def test_an_oco_whose_take_profit_fills_expires_its_stop() -> None:
    async def scenario(ex: Any, url: str, at: Callable[[float], float]) -> None:
        usdt = (await ex.fetch_balance())["total"]["USDT"]
        placed = await ex.privatePostOrderListOco(_oco(at, "b"))
        move(url, at(1.05))
        legs = await _legs(ex, placed)
        assert legs["tp-b"]["status"] == "closed"
        assert legs["tp-b"]["average"] == pytest.approx(at(1.03))  # a maker fills at its price
        assert legs["sl-b"]["status"] == "expired"
        move(url, at(0.90))  # the expired stop never fires afterwards
        assert (await _legs(ex, placed))["sl-b"]["status"] == "expired"
        balance = await ex.fetch_balance()
        assert balance["total"]["USDT"] == pytest.approx(usdt + 0.5 * at(1.03) * 0.999)
        assert balance["used"].get("ETH", 0) == 0

    run(scenario)


def test_a_buy_oco_on_the_older_endpoint_mirrors_the_sell() -> None:
    async def scenario(ex: Any, url: str, at: Callable[[float], float]) -> None:
        placed = await ex.privatePostOrderOco(
            {
                "symbol": MARKET_ID,
                "side": "BUY",
                "quantity": "0.5",
                "price": str(at(0.97)),
                "stopPrice": str(at(1.03)),
                "stopLimitPrice": str(at(1.05)),
                "stopLimitTimeInForce": "GTC",
                "listClientOrderId": "reenter",
                "limitClientOrderId": "dip",
                "stopClientOrderId": "breakout",
            }
        )
        assert (await ex.fetch_balance())["used"]["USDT"] == pytest.approx(0.5 * at(1.05))
        move(url, at(1.04))
        legs = await _legs(ex, placed)
        assert legs["breakout"]["status"] == "closed"
        assert legs["breakout"]["average"] == pytest.approx(at(1.04), rel=2e-3)
        assert legs["dip"]["status"] == "expired"
        assert (await ex.fetch_balance())["used"].get("USDT", 0) == 0

    run(scenario)


def test_cancelling_an_oco_or_one_leg_cancels_both_and_frees_the_lock() -> None:
    async def scenario(ex: Any, url: str, at: Callable[[float], float]) -> None:
        placed = await ex.privatePostOrderListOco(_oco(at, "c"))
        gone = await ex.privateDeleteOrderList(
            {"symbol": MARKET_ID, "listClientOrderId": "protect-c"}
        )
        assert gone["listOrderStatus"] == "ALL_DONE"
        assert {r["status"] for r in gone["orderReports"]} == {"CANCELED"}
        assert (await ex.fetch_balance())["used"].get("ETH", 0) == 0
        with pytest.raises(ccxt.OrderNotFound):
            await ex.privateDeleteOrderList({"symbol": MARKET_ID, "listClientOrderId": "protect-c"})

        again = await ex.privatePostOrderListOco(_oco(at, "d"))
        stop_id = next(o["orderId"] for o in again["orders"] if o["clientOrderId"] == "sl-d")
        await ex.cancel_order(str(stop_id), SYMBOL)
        assert {o["status"] for o in (await _legs(ex, again)).values()} == {"canceled"}
        assert await ex.fetch_open_orders(SYMBOL) == []
        assert (await ex.fetch_balance())["used"].get("ETH", 0) == 0
        assert placed["orderListId"] != again["orderListId"]

    run(scenario)


def test_an_oco_with_prices_on_the_wrong_side_is_refused() -> None:
    async def scenario(ex: Any, url: str, at: Callable[[float], float]) -> None:
        wrong = _oco(at, "e") | {"abovePrice": str(at(0.99)), "belowStopPrice": str(at(0.97))}
        with pytest.raises(ccxt.InvalidOrder, match="relationship of the prices"):
            await ex.privatePostOrderListOco(wrong)
        both_stops = _oco(at, "f") | {"aboveType": "STOP_LOSS", "aboveStopPrice": str(at(1.03))}
        with pytest.raises(ccxt.ExchangeError, match="Unsupported order combination"):
            await ex.privatePostOrderListOco(both_stops)
        assert await ex.fetch_open_orders(SYMBOL) == []
        assert (await ex.fetch_balance())["used"].get("ETH", 0) == 0

    run(scenario)


def test_the_tape_reaches_a_stop_at_the_first_trade_beyond_it() -> None:
    path = PricePath("ETH/USDT", 7, 1_800_000_000.0, 10)
    t0 = 1_800_000_000.0
    start = path.price_at(t0)
    path.set_price(t0 + 10, start * 0.95)  # the first jump past a 97% stop
    path.set_price(t0 + 20, start * 0.90)  # a deeper one later must not be the trigger
    hit = path.first_beyond(t0, t0 + 30, start * 0.97, None)
    assert hit is not None
    t, price = hit
    assert t0 + 10 <= t < t0 + 10 + TRADE_INTERVAL
    assert price == pytest.approx(start * 0.95, rel=1e-4)
    assert path.first_beyond(t0, t0 + 9.9, start * 0.97, None) is None
    candle = path.minute_candle(int((t0 + 10) // 60))
    assert candle.low <= start * 0.90 and candle.high >= start * 0.999
