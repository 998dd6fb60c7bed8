"""Binance's OCO order lists: two legs that share one lock; when one fires or fills, the
other expires (``ONE_CANCELS_THE_OTHER``).

Sources: Binance spot API docs, "New Order list - OCO (TRADE)" (``POST
/api/v3/orderList/oco``: ``aboveType``/``belowType``, one leg ``LIMIT_MAKER`` or
``TAKE_PROFIT(_LIMIT)``, the other ``STOP_LOSS(_LIMIT)``; for a sell the take-profit is above
and the last price lies between them, mirrored for a buy) and the older ``POST
/api/v3/order/oco`` (``price`` for the ``LIMIT_MAKER`` leg, ``stopPrice`` and optional
``stopLimitPrice`` for the stop leg). Cancelling either leg cancels the list. A list is
``EXECUTING`` while any leg is open, then ``ALL_DONE``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sandbox.errors import ApiError
from sandbox.order_kinds import STOP_KINDS

if TYPE_CHECKING:
    from sandbox.matching import Order, PaperExchange

_PROFIT_KINDS = frozenset({"LIMIT_MAKER", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"})
_LOSS_KINDS = frozenset({"STOP_LOSS", "STOP_LOSS_LIMIT"})
_LEG_FIELDS = {  # leg param -> order param
    "Type": "type",
    "Price": "price",
    "StopPrice": "stopPrice",
    "TimeInForce": "timeInForce",
    "ClientOrderId": "newClientOrderId",
}


@dataclass
class OrderList:
    """One OCO: its legs' order ids, stop leg first."""

    order_list_id: int
    list_client_order_id: str
    account: str
    symbol: str
    order_ids: list[int]
    time_ms: int


def legs_of(params: dict[str, str]) -> list[dict[str, str]]:
    """Return the two legs of ``POST /api/v3/orderList/oco`` as order params, stop leg first."""
    for name in ("quantity", "aboveType", "belowType"):
        if not params.get(name):
            raise ApiError(
                400,
                -1102,
                f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.",
            )
    legs = []
    for prefix in ("above", "below"):
        leg = _common(params)
        leg.update(
            {o: params[prefix + k] for k, o in _LEG_FIELDS.items() if params.get(prefix + k)}
        )
        legs.append(leg)
    kinds = {legs[0]["type"], legs[1]["type"]}
    if not (kinds & _PROFIT_KINDS and kinds & _LOSS_KINDS):
        raise ApiError(400, -1014, "Unsupported order combination.")
    return sorted(legs, key=lambda leg: leg["type"] not in _LOSS_KINDS)


def legacy_legs_of(params: dict[str, str]) -> list[dict[str, str]]:
    """Return the two legs of the older ``POST /api/v3/order/oco``, stop leg first."""
    for name in ("quantity", "price", "stopPrice"):
        if not params.get(name):
            raise ApiError(
                400,
                -1102,
                f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.",
            )
    stop = _common(params) | {"stopPrice": params["stopPrice"], "type": "STOP_LOSS"}
    if params.get("stopLimitPrice"):
        stop |= {"type": "STOP_LOSS_LIMIT", "price": params["stopLimitPrice"]}
        stop["timeInForce"] = params.get("stopLimitTimeInForce", "")
    limit = _common(params) | {"type": "LIMIT_MAKER", "price": params["price"]}
    for leg, key in ((stop, "stopClientOrderId"), (limit, "limitClientOrderId")):
        if params.get(key):
            leg["newClientOrderId"] = params[key]
    return [stop, limit]


def _common(params: dict[str, str]) -> dict[str, str]:
    return {k: params[k] for k in ("symbol", "side", "quantity") if k in params}


def _trigger_level(order: Order) -> float:
    return order.stop_price if order.type in STOP_KINDS else order.price


def place(
    exchange: PaperExchange,
    account: str,
    params: dict[str, str],
    legs: list[dict[str, str]],
    now: float,
) -> OrderList:
    """Check and record an OCO of two legs (stop leg first) with one lock between them."""
    exchange.settle(now)
    stop = exchange.prepare(account, legs[0], now)
    other = exchange.prepare(account, legs[1], now)
    if stop.client_order_id == other.client_order_id:
        raise ApiError(400, -2010, "Duplicate order sent.")
    last = exchange.path(stop.symbol).price_at(now)
    sell = stop.side == "SELL"
    profit, loss = _trigger_level(other), _trigger_level(stop)
    if not (profit > last > loss if sell else profit < last < loss):
        raise ApiError(400, -2010, "The relationship of the prices for the orders is not correct.")
    for leg in (stop, other):
        exchange.check_market(leg, now)
    needs = [exchange.need(stop, now), exchange.need(other, now)]
    holder = stop if needs[0] >= needs[1] else other
    exchange.hold(holder, max(needs))
    list_id = max(exchange.lists, default=0) + 1
    for leg in (stop, other):
        leg.order_list_id = list_id
        exchange.orders[leg.order_id] = leg
    listed = OrderList(
        list_id,
        params.get("listClientOrderId") or f"sandbox-list-{list_id}",
        account,
        stop.symbol,
        [stop.order_id, other.order_id],
        stop.time_ms,
    )
    exchange.lists[list_id] = listed
    exchange.save()
    return listed


def find(exchange: PaperExchange, account: str, params: dict[str, str], by: str) -> OrderList:
    """Return the account's list named by ``orderListId`` or by its client id param ``by``."""
    if params.get("orderListId"):
        listed = exchange.lists.get(int(params["orderListId"]))
    elif params.get(by):
        matches = [
            o
            for o in exchange.lists.values()
            if o.account == account and o.list_client_order_id == params[by]
        ]
        listed = max(matches, key=lambda o: o.order_list_id) if matches else None
    else:
        raise ApiError(
            400, -1102, f"Param 'orderListId' or '{by}' must be sent, but both were empty/null!"
        )
    if listed is None or listed.account != account:
        raise ApiError(400, -2013, "Order list does not exist.")
    return listed


def is_executing(exchange: PaperExchange, listed: OrderList) -> bool:
    """Return True while any leg of the list is open."""
    return any(exchange.orders[i].is_open for i in listed.order_ids)


def report(exchange: PaperExchange, listed: OrderList, with_legs: bool = False) -> dict[str, Any]:
    """Return the list as Binance's order list endpoints show it (``orderReports`` if asked)."""
    running = is_executing(exchange, listed)
    legs = [exchange.orders[i] for i in listed.order_ids]
    body: dict[str, Any] = {
        "orderListId": listed.order_list_id,
        "contingencyType": "OCO",
        "listStatusType": "EXEC_STARTED" if running else "ALL_DONE",
        "listOrderStatus": "EXECUTING" if running else "ALL_DONE",
        "listClientOrderId": listed.list_client_order_id,
        "transactionTime": max(o.update_ms for o in legs),
        "symbol": listed.symbol,
        "orders": [
            {"symbol": o.symbol, "orderId": o.order_id, "clientOrderId": o.client_order_id}
            for o in legs
        ],
    }
    if with_legs:
        body["orderReports"] = [_leg_report(o) for o in legs]
    return body


def _leg_report(order: Order) -> dict[str, Any]:
    body = order.report()
    body["transactTime"] = order.update_ms
    for key in ("time", "updateTime", "isWorking", "icebergQty"):
        body.pop(key, None)
    if order.type not in STOP_KINDS:
        body.pop("stopPrice", None)
    return body
