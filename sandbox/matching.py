"""Paper matching: accounts, balances and orders filled against the sandbox's book.

Market orders take liquidity level by level (partial fills, and EXPIRED if the book runs
out); limit orders take what crosses and rest for the remainder (GTC), or expire (IOC) or
are rejected unless fully fillable (FOK). Resting limit orders fill at their price when the
market trades through it. Fees are charged in the asset received, as Binance does by default.
``newClientOrderId`` must be unique among an account's open orders. With a state file,
every change is saved, so a restart keeps accounts and orders.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from sandbox.errors import ApiError
from sandbox.market import PricePath

MIN_NOTIONAL = 5.0
MAX_QTY = 9000.0
BOOK_DEPTH = 100


@dataclass
class Order:
    """One order as Binance reports it (quantities in the base asset)."""

    order_id: int
    client_order_id: str
    account: str
    symbol: str
    side: str
    type: str
    time_in_force: str
    price: float
    orig_qty: float
    executed_qty: float = 0.0
    quote_qty: float = 0.0
    status: str = "NEW"
    time_ms: int = 0
    update_ms: int = 0
    locked: float = 0.0
    fills: list[dict[str, Any]] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        """Return True while the order can still fill."""
        return self.status in ("NEW", "PARTIALLY_FILLED")

    def report(self) -> dict[str, Any]:
        """Return the order as Binance's GET /api/v3/order shows it."""
        return {
            "symbol": self.symbol,
            "orderId": self.order_id,
            "orderListId": -1,
            "clientOrderId": self.client_order_id,
            "price": f"{self.price:.8f}",
            "origQty": f"{self.orig_qty:.8f}",
            "executedQty": f"{self.executed_qty:.8f}",
            "cummulativeQuoteQty": f"{self.quote_qty:.8f}",
            "status": self.status,
            "timeInForce": self.time_in_force,
            "type": self.type,
            "side": self.side,
            "stopPrice": "0.00000000",
            "icebergQty": "0.00000000",
            "time": self.time_ms,
            "updateTime": self.update_ms,
            "isWorking": True,
            "workingTime": self.time_ms,
            "origQuoteOrderQty": "0.00000000",
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }


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
        self.next_id = state["next_id"]

    def save(self) -> None:
        """Write the state file atomically (when one is configured)."""
        if self.state_file is None:
            return
        state = {
            "accounts": self.accounts,
            "orders": [asdict(o) for o in self.orders.values()],
            "trades": self.trades,
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
        """Validate, match and record a new order; raise ApiError as Binance would."""
        self.settle(now)
        order = self._new_order(account, params, now)
        path = self.path(order.symbol)
        base, quote = self._assets(order.symbol)
        bids, asks = path.book(now, BOOK_DEPTH)
        levels = asks if order.side == "BUY" else bids
        if order.type == "MARKET" and order.orig_qty == 0:  # quoteOrderQty market buy
            order.orig_qty = self._qty_for_quote(path, asks, order.price)
            order.price = 0.0
        self._check_filters(path, order)
        self._reserve(order, base, quote, levels)
        self._take(order, levels, base, quote, now)
        self._finish_taker(order, base, quote)
        self.orders[order.order_id] = order
        self.save()
        return order

    def _new_order(self, account: str, params: dict[str, str], now: float) -> Order:
        symbol = params.get("symbol", "")
        self.path(symbol)
        side, kind = params.get("side", ""), params.get("type", "")
        if side not in ("BUY", "SELL"):
            raise ApiError(400, -1117, "Invalid side.")
        if kind not in ("MARKET", "LIMIT"):
            raise ApiError(400, -1116, "Invalid orderType.")
        tif = params.get("timeInForce", "GTC" if kind == "LIMIT" else "")
        if kind == "LIMIT" and tif not in ("GTC", "IOC", "FOK"):
            raise ApiError(400, -1115, "Invalid timeInForce.")
        client_id = params.get("newClientOrderId") or f"sandbox-{self.next_id}"
        if any(
            o.is_open and o.account == account and o.client_order_id == client_id
            for o in self.orders.values()
        ):
            raise ApiError(400, -2010, "Duplicate order sent.")
        if kind == "LIMIT":
            price, qty = _decimal(params, "price"), _decimal(params, "quantity")
        elif params.get("quoteOrderQty") and side == "BUY":
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
        if order.type == "LIMIT" and not _multiple_of(order.price, path.tick):
            raise ApiError(400, -1013, "Filter failure: PRICE_FILTER")
        reference = order.price if order.type == "LIMIT" else path.price_at(order.time_ms / 1000)
        if order.orig_qty * reference < MIN_NOTIONAL:
            raise ApiError(400, -1013, "Filter failure: NOTIONAL")

    def _reserve(
        self, order: Order, base: str, quote: str, levels: list[tuple[float, float]]
    ) -> None:
        if order.side == "SELL":
            need, asset = order.orig_qty, base
        elif order.type == "LIMIT":
            need, asset = order.orig_qty * order.price, quote
        else:
            need, asset, left = 0.0, quote, order.orig_qty
            for price, size in levels:
                take = min(size, left)
                need, left = need + take * price, left - take
            need *= 1.0000001
        free = self.balances(order.account).get(asset, [0.0, 0.0])[0]
        if free + 1e-12 < need:
            raise ApiError(400, -2010, "Account has insufficient balance for requested action.")
        self._move(order.account, asset, free=-need, locked=need)
        order.locked = need

    def _take(
        self, order: Order, levels: list[tuple[float, float]], base: str, quote: str, now: float
    ) -> None:
        if order.type == "LIMIT" and order.time_in_force == "FOK":
            crossing = sum(s for p, s in levels if self._crosses(order, p))
            if crossing + 1e-12 < order.orig_qty:
                return
        for price, size in levels:
            left = order.orig_qty - order.executed_qty
            if left <= 1e-12 or (order.type == "LIMIT" and not self._crosses(order, price)):
                break
            self._fill(order, price, min(size, left), now, maker=False)

    @staticmethod
    def _crosses(order: Order, price: float) -> bool:
        return price <= order.price if order.side == "BUY" else price >= order.price

    def _fill(self, order: Order, price: float, qty: float, now: float, *, maker: bool) -> None:
        base, quote = self._assets(order.symbol)
        cost = price * qty
        if order.side == "BUY":
            spend = qty * order.price if order.type == "LIMIT" else cost
            self._move(order.account, quote, free=spend - cost, locked=-spend)
            fee, fee_asset = qty * self.fee_rate, base
            self._move(order.account, base, free=qty - fee)
        else:
            self._move(order.account, base, locked=-qty)
            fee, fee_asset = cost * self.fee_rate, quote
            self._move(order.account, quote, free=cost - fee)
        order.locked -= (
            qty * order.price
            if order.side == "BUY" and order.type == "LIMIT"
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
                "orderListId": -1,
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
        rests = order.type == "LIMIT" and order.time_in_force == "GTC"
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
        """Fill resting limit orders that the market traded through since the last call."""
        since, self.settled_at = self.settled_at, now
        open_orders = [o for o in self.orders.values() if o.is_open]
        if since is None or not open_orders:
            return
        changed = False
        for order in open_orders:
            path = self.path(order.symbol)
            start = max(since, order.time_ms / 1000)
            candles = [
                c for c in path.candles(60.0, start - 60.0, now, now) if c.open_time + 60 > start
            ]
            low = min((c.low for c in candles), default=path.price_at(now))
            high = max((c.high for c in candles), default=path.price_at(now))
            if (order.side == "BUY" and low <= order.price) or (
                order.side == "SELL" and high >= order.price
            ):
                base, quote = self._assets(order.symbol)
                self._fill(order, order.price, order.orig_qty - order.executed_qty, now, maker=True)
                self._release(order, base, quote)
                changed = True
        if changed:
            self.save()

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
        order.status = "CANCELED"
        order.update_ms = int(now * 1000)
        self._release(order, *self._assets(order.symbol))
        self.save()
        return order
