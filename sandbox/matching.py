"""Paper matching: accounts, balances and orders filled against the sandbox's book.

Market orders take liquidity level by level (partial fills, and EXPIRED if the book runs
out); limit orders take what crosses and rest for the remainder (GTC), or expire (IOC) or
are rejected unless fully fillable (FOK). Resting limit orders fill at their price when the
market trades through it. Fees are charged in the asset received, as Binance does by default.
``newClientOrderId`` must be unique among an account's open orders. With a state file,
every change is saved, so a restart keeps accounts and orders.

Stop orders (``sandbox/order_kinds.py``) lock their funds and wait off the book; each
``settle`` walks the trade tape since the last one (``PricePath.first_beyond``) and fires
every stop at the first trade at or beyond its stop price, once, in the order the tape
reached them; a fired stop executes against the book of that moment (a market stop at that
trade's price, not at the stop). ``LIMIT_MAKER`` orders and fired stop-limits then rest and
fill when the tape reaches their price. Legs of an order list (``sandbox/order_lists.py``)
share one lock: when one fires or fills, the other expires.
"""

from __future__ import annotations

import heapq
import json
import os
from dataclasses import asdict
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from sandbox.errors import ApiError
from sandbox.market import PricePath
from sandbox.order_kinds import PRICED_KINDS, STOP_KINDS, check_params, trigger_bounds
from sandbox.order_kinds import would_trigger as _would_trigger
from sandbox.order_lists import OrderList
from sandbox.orders import Order

__all__ = ["BOOK_DEPTH", "MIN_NOTIONAL", "Order", "PaperExchange"]

#: (tape time, order id, price) of a stop firing or a maker filling.
_Event = tuple[float, int, float]

MIN_NOTIONAL = 5.0
MAX_QTY = 9000.0
BOOK_DEPTH = 100


def _decimal(params: dict[str, str], name: str, required: bool = True) -> float | None:
    raw = params.get(name)
    if raw is None or raw == "":
        if required:
            raise ApiError(
                400,
                -1102,
                f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.",
            )
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ApiError(
            400,
            -1100,
            f"Illegal characters found in parameter '{name}'; "
            "legal range is '^([0-9]{1,20})(\\.[0-9]{1,20})?$'.",
        ) from None
    if not value.is_finite() or value <= 0:
        raise ApiError(400, -1013, f"Invalid {name}.")
    return float(value)


def _multiple_of(value: float, step: Decimal) -> bool:
    return Decimal(str(value)) % step == 0


class PaperExchange:
    """Accounts and orders of one sandbox, matched against its price paths."""

    def __init__(
        self,
        paths: dict[str, PricePath],
        fee_rate: float,
        starting_balances: dict[str, float],
        state_file: Path | None = None,
    ) -> None:
        self.paths = paths
        self.fee_rate = fee_rate
        self.starting_balances = dict(starting_balances)
        self.state_file = state_file
        self.accounts: dict[str, dict[str, list[float]]] = {}
        self.orders: dict[int, Order] = {}
        self.trades: list[dict[str, Any]] = []
        self.lists: dict[int, OrderList] = {}
        self.next_id = 1
        self.settled_at: float | None = None
        if state_file is not None and state_file.exists():
            self._load(state_file)

    # -- persistence ---------------------------------------------------------------------

    def _load(self, path: Path) -> None:
        state = json.loads(path.read_text())
        self.accounts = state["accounts"]
        self.orders = {o["order_id"]: Order(**o) for o in state["orders"]}
        self.trades = state["trades"]
        self.lists = {o["order_list_id"]: OrderList(**o) for o in state.get("lists", [])}
        self.next_id = state["next_id"]

    def save(self) -> None:
        """Write the state file atomically (when one is configured)."""
        if self.state_file is None:
            return
        state = {
            "accounts": self.accounts,
            "orders": [asdict(o) for o in self.orders.values()],
            "trades": self.trades,
            "lists": [asdict(o) for o in self.lists.values()],
            "next_id": self.next_id,
        }
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_file)

    # -- accounts --------------------------------------------------------------------------

    def balances(self, account: str) -> dict[str, list[float]]:
        """Return the account's balances as {asset: [free, locked]}, opening it if new."""
        if account not in self.accounts:
            self.accounts[account] = {a: [q, 0.0] for a, q in self.starting_balances.items()}
        return self.accounts[account]

    def _move(self, account: str, asset: str, free: float = 0.0, locked: float = 0.0) -> None:
        entry = self.balances(account).setdefault(asset, [0.0, 0.0])
        entry[0] = max(0.0, entry[0] + free)
        entry[1] = max(0.0, entry[1] + locked)

    def path(self, symbol: str) -> PricePath:
        """Return the path of an exchange symbol such as ``BTCUSDT``."""
        try:
            return self.paths[symbol]
        except KeyError:
            raise ApiError(400, -1121, "Invalid symbol.") from None

    # -- orders ----------------------------------------------------------------------------

    def place(self, account: str, params: dict[str, str], now: float) -> Order:
        """Validate, match and record a new order; raise ApiError as Binance would.

        A stop order is checked, locks its funds and waits (``settle`` fires it).
        """
        self.settle(now)
        order = self.prepare(account, params, now)
        self.check_market(order, now)
        if order.is_pending:
            self.hold(order, self.need(order, now))
        else:
            self._execute(order, now)
        self.orders[order.order_id] = order
        self.save()
        return order

    def prepare(self, account: str, params: dict[str, str], now: float) -> Order:
        """Return a new order checked against the symbol's filters (not yet the market).

        Warning: it takes an order id even if the order is then refused.
        """
        order = self._new_order(account, params, now)
        path = self.path(order.symbol)
        if order.type == "MARKET" and order.orig_qty == 0:  # quoteOrderQty market buy
            order.orig_qty = self._qty_for_quote(path, path.book(now, BOOK_DEPTH)[1], order.price)
            order.price = 0.0
        self._check_filters(path, order)
        return order

    def check_market(self, order: Order, now: float) -> None:
        """Refuse a stop that would fire at once, or a LIMIT_MAKER that would take."""
        path = self.path(order.symbol)
        if order.type in STOP_KINDS and _would_trigger(
            order.type, order.side, order.stop_price, path.price_at(now)
        ):
            raise ApiError(400, -2010, "Order would trigger immediately.")
        if order.type == "LIMIT_MAKER" and self._would_take(order, now):
            raise ApiError(400, -2010, "Order would immediately match and take.")

    def _levels(self, order: Order, now: float) -> list[tuple[float, float]]:
        bids, asks = self.path(order.symbol).book(now, BOOK_DEPTH)
        return asks if order.side == "BUY" else bids

    def _would_take(self, order: Order, now: float) -> bool:
        return self._crosses(order, self._levels(order, now)[0][0])

    def _execute(self, order: Order, now: float) -> None:
        base, quote = self._assets(order.symbol)
        levels = self._levels(order, now)
        self.hold(order, self._need_at(order, levels))
        self._take(order, levels, base, quote, now)
        self._finish_taker(order, base, quote)

    def _new_order(self, account: str, params: dict[str, str], now: float) -> Order:
        symbol = params.get("symbol", "")
        self.path(symbol)
        side, kind = params.get("side", ""), params.get("type", "")
        if side not in ("BUY", "SELL"):
            raise ApiError(400, -1117, "Invalid side.")
        tif = check_params(kind, params)
        client_id = params.get("newClientOrderId") or f"sandbox-{self.next_id}"
        if any(
            o.is_open and o.account == account and o.client_order_id == client_id
            for o in self.orders.values()
        ):
            raise ApiError(400, -2010, "Duplicate order sent.")
        if kind in PRICED_KINDS:
            price, qty = _decimal(params, "price"), _decimal(params, "quantity")
        elif kind == "MARKET" and params.get("quoteOrderQty") and side == "BUY":
            price, qty = _decimal(params, "quoteOrderQty"), 0.0
        else:
            price, qty = 0.0, _decimal(params, "quantity")
        self.next_id += 1
        ms = int(now * 1000)
        return Order(
            self.next_id - 1,
            client_id,
            account,
            symbol,
            side,
            kind,
            tif,
            price or 0.0,
            qty or 0.0,
            time_ms=ms,
            update_ms=ms,
            stop_price=_decimal(params, "stopPrice", required=False) or 0.0,
        )

    def _assets(self, symbol: str) -> tuple[str, str]:
        for quote in ("USDT", "USDC", "BUSD", "BTC", "ETH"):
            if symbol.endswith(quote) and len(symbol) > len(quote):
                return symbol[: -len(quote)], quote
        raise ApiError(400, -1121, "Invalid symbol.")

    def _qty_for_quote(
        self, path: PricePath, asks: list[tuple[float, float]], quote: float
    ) -> float:
        qty, left = 0.0, quote
        for price, size in asks:
            take = min(size, left / price)
            qty, left = qty + take, left - take * price
            if left <= 1e-9:
                break
        return path.round_qty(qty)

    def _check_filters(self, path: PricePath, order: Order) -> None:
        if not _multiple_of(order.orig_qty, path.step) or order.orig_qty > MAX_QTY:
            raise ApiError(400, -1013, "Filter failure: LOT_SIZE")
        prices = [order.price] if order.is_priced else []
        prices += [order.stop_price] if order.type in STOP_KINDS else []
        if any(not _multiple_of(p, path.tick) for p in prices):
            raise ApiError(400, -1013, "Filter failure: PRICE_FILTER")
        reference = prices[0] if prices else path.price_at(order.time_ms / 1000)
        if order.orig_qty * reference < MIN_NOTIONAL:
            raise ApiError(400, -1013, "Filter failure: NOTIONAL")

    def need(self, order: Order, now: float) -> float:
        """Return what the order locks: base to sell, quote to buy (a market stop: at its stop)."""
        if order.is_pending and not order.is_priced:
            return self._need_at(order, [(order.stop_price, order.orig_qty)])
        return self._need_at(order, self._levels(order, now))

    @staticmethod
    def _need_at(order: Order, levels: list[tuple[float, float]]) -> float:
        if order.side == "SELL":
            return order.orig_qty
        if order.is_priced:
            return order.orig_qty * order.price
        need, left = 0.0, order.orig_qty
        for price, size in levels:
            take = min(size, left)
            need, left = need + take * price, left - take
        return need * 1.0000001

    def hold(self, order: Order, need: float) -> None:
        """Lock ``need`` of the asset the order spends, or raise insufficient balance."""
        base, quote = self._assets(order.symbol)
        asset = base if order.side == "SELL" else quote
        free = self.balances(order.account).get(asset, [0.0, 0.0])[0]
        if free + 1e-12 < need:
            raise ApiError(400, -2010, "Account has insufficient balance for requested action.")
        self._move(order.account, asset, free=-need, locked=need)
        order.locked += need

    def _take(
        self, order: Order, levels: list[tuple[float, float]], base: str, quote: str, now: float
    ) -> None:
        if order.is_priced and order.time_in_force == "FOK":
            crossing = sum(s for p, s in levels if self._crosses(order, p))
            if crossing + 1e-12 < order.orig_qty:
                return
        for price, size in levels:
            left = order.orig_qty - order.executed_qty
            if left <= 1e-12 or (order.is_priced and not self._crosses(order, price)):
                break
            self._fill(order, price, min(size, left), now, maker=False)

    @staticmethod
    def _crosses(order: Order, price: float) -> bool:
        return price <= order.price if order.side == "BUY" else price >= order.price

    def _fill(self, order: Order, price: float, qty: float, now: float, *, maker: bool) -> None:
        base, quote = self._assets(order.symbol)
        cost = price * qty
        if order.side == "BUY":
            spend = qty * order.price if order.is_priced else cost
            self._move(order.account, quote, free=spend - cost, locked=-spend)
            fee, fee_asset = qty * self.fee_rate, base
            self._move(order.account, base, free=qty - fee)
        else:
            self._move(order.account, base, locked=-qty)
            fee, fee_asset = cost * self.fee_rate, quote
            self._move(order.account, quote, free=cost - fee)
        order.locked -= (
            qty * order.price
            if order.side == "BUY" and order.is_priced
            else (cost if order.side == "BUY" else qty)
        )
        order.executed_qty += qty
        order.quote_qty += cost
        order.status = (
            "FILLED" if order.orig_qty - order.executed_qty <= 1e-12 else "PARTIALLY_FILLED"
        )
        order.update_ms = int(now * 1000)
        trade_id = len(self.trades) + 1
        fill = {
            "price": f"{price:.8f}",
            "qty": f"{qty:.8f}",
            "commission": f"{fee:.8f}",
            "commissionAsset": fee_asset,
            "tradeId": trade_id,
        }
        order.fills.append(fill)
        self.trades.append(
            {
                "symbol": order.symbol,
                "id": trade_id,
                "orderId": order.order_id,
                "orderListId": order.order_list_id,
                "price": fill["price"],
                "qty": fill["qty"],
                "quoteQty": f"{cost:.8f}",
                "commission": fill["commission"],
                "commissionAsset": fee_asset,
                "time": order.update_ms,
                "isBuyer": order.side == "BUY",
                "isMaker": maker,
                "isBestMatch": True,
                "account": order.account,
            }
        )

    def _finish_taker(self, order: Order, base: str, quote: str) -> None:
        rests = order.is_priced and order.time_in_force == "GTC"
        if order.is_open and not rests:
            order.status = "EXPIRED"
        if not order.is_open:
            self._release(order, base, quote)

    def _release(self, order: Order, base: str, quote: str) -> None:
        asset = quote if order.side == "BUY" else base
        if order.locked > 0:
            self._move(order.account, asset, free=order.locked, locked=-order.locked)
        order.locked = 0.0

    def settle(self, now: float) -> None:
        """Fire stops and fill resting orders that the market reached since the last call."""
        since, self.settled_at = self.settled_at, now
        open_orders = [o for o in self.orders.values() if o.is_open]
        if since is None or not open_orders:
            return
        changed = self._run_tape(open_orders, since, now)
        for order in open_orders:
            if order.type == "LIMIT" and order.is_open and self._traded_through(order, since, now):
                base, quote = self._assets(order.symbol)
                self._fill(order, order.price, order.orig_qty - order.executed_qty, now, maker=True)
                self._release(order, base, quote)
                changed = True
        if changed:
            self.save()

    def _traded_through(self, order: Order, since: float, now: float) -> bool:
        path = self.path(order.symbol)
        start = max(since, order.time_ms / 1000)
        candles = [
            c for c in path.candles(60.0, start - 60.0, now, now) if c.open_time + 60 > start
        ]
        low = min((c.low for c in candles), default=path.price_at(now))
        high = max((c.high for c in candles), default=path.price_at(now))
        return (order.side == "BUY" and low <= order.price) or (
            order.side == "SELL" and high >= order.price
        )

    def _run_tape(self, orders: list[Order], since: float, now: float) -> bool:
        """Fire stops and fill makers in the order the trade tape reached them."""
        events = [e for e in (self._next_event(o, since, now) for o in orders) if e]
        heapq.heapify(events)
        changed = False
        while events:
            t, order_id, price = heapq.heappop(events)
            order = self.orders[order_id]
            if not order.is_open:  # the other leg of its list got there first
                continue
            self._activate(order, t)
            if order.is_pending:
                self._fire(order, t)
            else:
                base, quote = self._assets(order.symbol)
                self._fill(order, price, order.orig_qty - order.executed_qty, t, maker=True)
                self._release(order, base, quote)
            changed = True
            event = self._next_event(order, t, now)
            if event:
                heapq.heappush(events, event)
        return changed

    def _next_event(self, order: Order, since: float, now: float) -> _Event | None:
        """Return when the tape next fires this stop or fills this maker, if it does by now."""
        if not order.is_open or order.type == "LIMIT" or not (order.is_priced or order.is_pending):
            return None
        path = self.path(order.symbol)
        if order.is_pending:
            below, above = trigger_bounds(order.type, order.side, order.stop_price)
            hit = path.first_beyond(max(since, order.time_ms / 1000), now, below, above)
            return (hit[0], order.order_id, hit[1]) if hit else None
        below, above = (order.price, None) if order.side == "BUY" else (None, order.price)
        hit = path.first_beyond(max(since, order.working_time / 1000), now, below, above)
        return (hit[0], order.order_id, order.price) if hit else None

    def _fire(self, order: Order, t: float) -> None:
        """Turn a stop into its market or limit order at tape time ``t`` and match it."""
        order.working_ms = order.update_ms = int(t * 1000)
        base, quote = self._assets(order.symbol)
        self._release(order, base, quote)
        try:
            self._execute(order, t)
        except ApiError:  # the funds it locked were not enough at the price it fired at
            order.status = "EXPIRED"

    def _activate(self, order: Order, t: float) -> None:
        """Expire the other legs of the order's list, handing their lock to this leg."""
        listed = self.lists.get(order.order_list_id)
        if listed is None:
            return
        for other in (self.orders[i] for i in listed.order_ids if i != order.order_id):
            if other.is_open:
                order.locked, other.locked = order.locked + other.locked, 0.0
                other.status, other.update_ms = "EXPIRED", int(t * 1000)

    def find(self, account: str, params: dict[str, str]) -> Order:
        """Return the account's order named by orderId or origClientOrderId."""
        symbol = params.get("symbol", "")
        self.path(symbol)
        if params.get("orderId"):
            order = self.orders.get(int(params["orderId"]))
        elif params.get("origClientOrderId"):
            matches = [
                o
                for o in self.orders.values()
                if o.account == account and o.client_order_id == params["origClientOrderId"]
            ]
            order = max(matches, key=lambda o: o.order_id) if matches else None
        else:
            raise ApiError(
                400,
                -1102,
                "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!",
            )
        if order is None or order.account != account or order.symbol != symbol:
            raise ApiError(400, -2013, "Order does not exist.")
        return order

    def cancel(self, account: str, params: dict[str, str], now: float) -> Order:
        """Cancel an open order and release what it locked."""
        self.settle(now)
        try:
            order = self.find(account, params)
        except ApiError as exc:
            if exc.code == -2013:
                raise ApiError(400, -2011, "Unknown order sent.") from None
            raise
        if not order.is_open:
            raise ApiError(400, -2011, "Unknown order sent.")
        self.cancel_legs(order, now)
        self.save()
        return order

    def cancel_legs(self, order: Order, now: float) -> None:
        """Cancel an order and, as Binance does, every other open leg of its order list."""
        listed = self.lists.get(order.order_list_id)
        legs = [self.orders[i] for i in listed.order_ids] if listed else [order]
        for leg in legs:
            if leg.is_open:
                leg.status = "CANCELED"
                leg.update_ms = int(now * 1000)
                self._release(leg, *self._assets(leg.symbol))
