"""Reconciliation: compare the fleet's orders with the exchange's view, reading only what can
have changed since the last run, so its cost does not grow with the fleet's history.

One run on one exchange account:

1. **Index** what the fleet recorded since the last run (``tasks/reconcile_index.py``:
   the first run reads every execution record once, then only new ``orders:audit``
   entries; Redis only).
2. **Open orders** of the watched symbols: one request per symbol, or one for all symbols
   where the exchange offers it and it weighs less (``ALL_SYMBOLS_OPEN_ORDERS``). An open
   order the index does not hold is ``unknown`` if it carries our ``cai`` prefix (placed by
   the fleet but never recorded: a crash between placing and recording), else ``foreign``;
   a leg of an open position's exchange protection (the ledger's OCO ids) is ``protective``.
3. **Orders not final** in the index (open, partially filled, outcome unknown): one still
   open on the exchange is confirmed by step 2 for free; any other is asked for by client
   order id (``checked``), and its answer becomes its last known status. An order that
   reached a final status (closed, canceled, rejected, expired, or ``missing``: the exchange
   had none) is never asked again.
4. **Fills** since the last check: ``fetch_my_trades(symbol, since=...)`` per watched
   symbol, from the last fill seen (kept fleet-wide); each reported once, named by its
   client order id where the fleet knows it (an order id the index lacks is looked up once).
5. **Balances**: one ``fetch_balance``; a ledger position its asset's balance does not cover
   is ``drift`` (the fleet counted a fill the account does not show, or coins left it).

The summary (also stored under ``fleet:reconcile:<x>``) has ``matched`` (orders newly
indexed with a final status from the exchange's own answer, and orders not final that the
exchange confirmed with the recorded side: still open, or asked), ``missing`` (asked, and
the exchange has no such order, or one of the other side), ``unknown``, ``foreign``,
``checked`` (orders asked by id), ``fills``, ``balances``, ``drift``, ``weight`` and ``requests``
(what the run spent in the exchange's main limit, as the fleet's limiter prices it;
``weight_by_scope`` itemises it).

Warning: at most one page of fills per symbol per run (the exchange's default page); a
larger backlog is reported over the following runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from celery import shared_task

from core import events
from resilience import FallbackConfig, ResilientAPIClient
from resilience.ledger import Ledger, fill_from_order
from tasks import context
from tasks.context import Runtime
from tasks.reconcile_index import Known, OrderIndex, from_order, normal_status

#: Exchanges (ccxt id) that answer every symbol's open orders in one request, with the
#: limiter scope that prices both forms (by whether a ``symbol`` is sent). The form is used
#: when it weighs less than one request per watched symbol and the exchange's profile lets
#: ccxt send it (Binance: ``options.fetchOpenOrders.warnWithoutSymbol: false``).
ALL_SYMBOLS_OPEN_ORDERS: dict[str, str] = {"binance": "GET /api/v3/openOrders"}
OUR_PREFIX = "cai"
LOCK_SECONDS = 300
#: Reads here are account state: never served from (or kept in) the cache.
FRESH = FallbackConfig(cache_enabled=False, timeout=30.0)


#: How much of a position the account's balance may lack before it is drift (rounding of
#: fees and lot steps: the ledger and the exchange round differently).
DRIFT_TOLERANCE = 0.001


class WeightMeter:
    """Sum what the limiter admitted for this run's requests, priced by the fleet's table.

    The limiter reports each admitted request (``limiter.admitted``: exchange and scope);
    requests made in this run's context (and the tasks it starts) are counted, priced with
    the parameters the run passed (``calling``), which decide e.g. Binance's open-orders
    weight (6 for one symbol, 80 for all).
    """

    def __init__(self, client: ResilientAPIClient, exchange: str) -> None:
        self.client, self.exchange = client, exchange
        self.weight, self.requests = 0.0, 0
        self.by_scope: dict[str, float] = {}
        self.params: dict[str, Any] = {}

    def admitted(self, exchange: str, scope: str) -> None:
        """Count one admitted request."""
        if exchange != self.exchange:
            return
        try:
            charges = self.client.limiter.charges(exchange, scope, self.params)
        except ValueError:
            return
        weight = charges[0].weight if charges else 0.0
        self.weight += weight
        self.requests += 1
        self.by_scope[scope] = self.by_scope.get(scope, 0.0) + weight

    @contextlib.contextmanager
    def calling(self, params: Mapping[str, Any]) -> Iterator[None]:
        """Price the requests made inside the block with ``params``."""
        before, self.params = self.params, dict(params)
        try:
            yield
        finally:
            self.params = before


_meter: ContextVar[WeightMeter | None] = ContextVar("crypto_ai_reconcile_meter", default=None)


def _listener(event: str, fields: Mapping[str, Any]) -> None:
    meter = _meter.get()
    if meter is not None and event == "limiter.admitted":
        meter.admitted(str(fields.get("exchange")), str(fields.get("scope")))


def open_orders_in_one(client: ResilientAPIClient, exchange: str, symbols: list[str]) -> bool:
    """Return True when one all-symbols request weighs less than one per symbol."""
    profile = client.profile(exchange)
    scope = ALL_SYMBOLS_OPEN_ORDERS.get(profile.ccxt_id)
    allowed = (profile.options.get("fetchOpenOrders") or {}).get("warnWithoutSymbol") is False
    if scope is None or not allowed or len(symbols) < 2:
        return False
    one = client.limiter.charges(exchange, scope, {"symbol": symbols[0]})[0].weight
    every = client.limiter.charges(exchange, scope, {})[0].weight
    return every < one * len(symbols)


class Run:
    """One reconciliation of one exchange account (see the module docstring)."""

    def __init__(self, client: ResilientAPIClient, index: OrderIndex, symbols: list[str]):
        self.client, self.index, self.exchange = client, index, index.exchange
        self.symbols = symbols
        self.meter = WeightMeter(client, self.exchange)
        self.ledger = Ledger(client.clients, client.keys)

    async def ask(self, endpoint: str, params: dict[str, Any]) -> Any:
        """Make one fresh read, priced with its parameters."""
        with self.meter.calling(params):
            answer = await self.client.resilient_request(self.exchange, endpoint, params, FRESH)
        return answer.data

    async def open_orders(self) -> list[dict[str, Any]]:
        """Return the open orders of the watched symbols."""
        if open_orders_in_one(self.client, self.exchange, self.symbols):
            every = await self.ask("fetch_open_orders", {})
            return [o for o in every if o.get("symbol") in self.symbols]
        found: list[dict[str, Any]] = []
        for symbol in self.symbols:
            found += await self.ask("fetch_open_orders", {"symbol": symbol})
        return found

    async def find(self, known: Known) -> Any:
        """Return the exchange's order with this client order id, or None."""
        with self.meter.calling({"symbol": known.symbol}):
            return await self.client.find_order(self.exchange, known.symbol, known.cid)

    async def orders(self, summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Check the orders not final and the open orders; return the open ones by id."""
        newly = await self.index.catch_up()
        summary["matched"] += [k.cid for k in newly if k.final]
        opened = await self.open_orders()
        by_cid = {str(o.get("clientOrderId") or ""): o for o in opened}
        pending = await self.index.pending()
        answers: list[Known] = []
        for cid, known in sorted(pending.items()):
            if known.symbol not in self.symbols:
                continue  # an unwatched symbol's orders wait until it is watched again
            found = by_cid.get(cid)
            if found is None:
                summary["checked"] += 1
                found = await self.find(known)
            same = found is not None and found.get("side") == known.side
            summary["matched" if same else "missing"].append(cid)
            record = from_order(found, known.symbol) if found is not None else None
            filled = fill_from_order(known.symbol, found) if same else None
            if filled is not None:  # the ledger adds only what it has not seen of the order
                await self.ledger.aapply_fill(self.exchange, known.symbol, filled)
            answers.append(record or Known(cid, known.symbol, known.side, "missing", known.id))
        await self.index.learn(answers, exchange_said=True)
        held = await self.index.get(c for c in by_cid if c)
        guarding = await self.protective_ids()
        for cid, order in by_cid.items():
            if cid in guarding:
                summary["protective"].append(cid)  # a leg of a position's exchange protection
            elif cid not in held:
                kind = "unknown" if cid.startswith(OUR_PREFIX) else "foreign"
                summary[kind].append(cid or str(order["id"]))
        await self.index.name({str(o["id"]): c for c, o in by_cid.items() if c and o.get("id")})
        return {str(o["id"]): o for o in opened if o.get("id")}

    async def protective_ids(self) -> set[str]:
        """Return the client order ids of the open positions' exchange protection (OCO legs)."""
        positions = await asyncio.to_thread(self.ledger.positions, self.exchange)
        return {
            str(cid)
            for p in positions
            if p.protection and p.protection.get("kind") == "exchange"
            for cid in p.protection.get("order_ids") or []
        }

    async def fills(self, summary: dict[str, Any]) -> None:
        """Report the fills since the last check, once each."""
        cursors = await self.index.trade_cursors()
        fresh: list[dict[str, Any]] = []
        for symbol in self.symbols:
            cursor = cursors.get(symbol) or {}
            since = cursor.get("ms")
            params: dict[str, Any] = {"symbol": symbol}
            if since is not None:
                params["since"] = int(since)
            trades = await self.ask("fetch_my_trades", params)
            new, moved = new_trades(trades, cursor)
            if moved != cursor:
                await self.index.save_trade_cursor(symbol, moved)
            fresh += new
        names = await self.index.client_ids(str(t.get("order") or "") for t in fresh)
        for trade in fresh:
            order_id = str(trade.get("order") or "")
            if order_id and order_id not in names:
                names[order_id] = await self.name_order(order_id, str(trade["symbol"]), summary)
        summary["fills"] = [fill(t, names.get(str(t.get("order") or ""), "")) for t in fresh]

    async def name_order(self, order_id: str, symbol: str, summary: dict[str, Any]) -> str:
        """Return the client order id of an order the index does not know (asked once)."""
        summary["checked"] += 1
        order = await self.ask("fetch_order", {"id": order_id, "symbol": symbol})
        cid = str(order.get("clientOrderId") or "")
        if cid:
            await self.index.name({order_id: cid})
            held = await self.index.get([cid])
            if cid not in held and cid.startswith(OUR_PREFIX) and cid not in summary["unknown"]:
                summary["unknown"].append(cid)
        return cid

    async def balances(self, summary: dict[str, Any]) -> None:
        """Report the account's balances (the currencies it holds)."""
        data = await self.ask("fetch_balance", {})
        total = data.get("total") or {}
        held = sorted(c for c, v in total.items() if v)
        summary["balances"] = {
            c: {
                "free": (data.get("free") or {}).get(c),
                "used": (data.get("used") or {}).get(c),
                "total": total.get(c),
            }
            for c in held
        }
        summary["drift"] = await self.drift(total)

    async def drift(self, total: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Return the positions the ledger holds that the account's balance does not cover.

        The account may hold more than the fleet bought (coins of its own): that is no drift.
        A ledger position larger than the balance of its asset (beyond ``DRIFT_TOLERANCE`` of
        it) is: a fill the fleet counted that the exchange does not show, or coins moved out
        behind the fleet's back. Paper positions are the paper wallet's, not the account's.
        """
        positions = await asyncio.to_thread(self.ledger.positions, self.exchange)
        held: dict[str, float] = {}
        for position in positions:
            if position.mode != "paper" and position.amount > 0:
                asset = position.symbol.split("/")[0]
                held[asset] = held.get(asset, 0.0) + position.amount
        found = []
        for asset, amount in sorted(held.items()):
            balance = float(total.get(asset) or 0.0)
            if amount - balance > amount * DRIFT_TOLERANCE:
                found.append(
                    {
                        "asset": asset,
                        "ledger": amount,
                        "exchange": balance,
                        "short": amount - balance,
                    }
                )
        return found

    async def summary(self) -> dict[str, Any]:
        """Run every step; return the summary."""
        summary: dict[str, Any] = {
            "exchange": self.exchange,
            "at": time.time(),
            "matched": [],
            "missing": [],
            "unknown": [],
            "foreign": [],
            "protective": [],
            "checked": 0,
            "fills": [],
            "balances": {},
            "drift": [],
        }
        token = _meter.set(self.meter)
        events.subscribe(_listener)
        try:
            await self.orders(summary)
            await self.fills(summary)
            await self.balances(summary)
        finally:
            _meter.reset(token)
        summary["weight"] = self.meter.weight
        summary["requests"] = self.meter.requests
        summary["weight_by_scope"] = dict(sorted(self.meter.by_scope.items()))
        return summary


def new_trades(
    trades: list[dict[str, Any]], cursor: Mapping[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Return the trades after ``cursor`` (``{"ms", "ids"}``) and the cursor past them."""
    since, seen = cursor.get("ms"), set(cursor.get("ids") or [])
    new = [
        t
        for t in sorted(trades, key=lambda t: (t.get("timestamp") or 0, str(t.get("id"))))
        if since is None
        or (t.get("timestamp") or 0) > since
        or ((t.get("timestamp") or 0) == since and str(t.get("id")) not in seen)
    ]
    if not new:
        return [], dict(cursor)
    last = int(new[-1].get("timestamp") or 0)
    ids = {str(t.get("id")) for t in new if (t.get("timestamp") or 0) == last}
    if last == since:
        ids |= seen
    return new, {"ms": last, "ids": sorted(ids)}


def fill(trade: Mapping[str, Any], client_order_id: str) -> dict[str, Any]:
    """Return the summary's record of one fill."""
    fee = trade.get("fee") or {}
    record: dict[str, Any] = {
        "id": str(trade.get("id") or ""),
        "order_id": str(trade.get("order") or ""),
        "symbol": trade.get("symbol"),
        "side": trade.get("side"),
        "amount": trade.get("amount"),
        "price": trade.get("price"),
        "fee": {"cost": fee.get("cost"), "currency": fee.get("currency")},
        "timestamp": trade.get("timestamp"),
    }
    if client_order_id:
        record["client_order_id"] = client_order_id
    return record


async def reconcile(rt: Runtime, exchange: str) -> dict[str, Any]:
    """Reconcile one exchange account; store the summary in Redis and return it.

    One run at a time per account (a lease): a run that finds another running returns
    ``{"exchange": ..., "busy": True}`` without asking anything.
    """
    config, client, keys = rt.config(), rt.exchange_client(), rt.keyspace()
    redis = client.clients.aio()
    lock, token = keys.reconcile_lock(exchange), uuid.uuid4().hex
    if not await redis.set(lock, token, nx=True, ex=LOCK_SECONDS):
        return {"exchange": exchange, "busy": True, "at": time.time()}
    try:
        index = OrderIndex(redis, keys, exchange)
        summary = await Run(client, index, config.watched(exchange)).summary()
        await redis.set(keys.reconcile_summary(exchange), json.dumps(summary), ex=7 * 86400)
        return summary
    finally:
        if (await redis.get(lock) or b"").decode() == token:
            await redis.delete(lock)


@shared_task(name="reconcile.orders")
def reconcile_orders(exchange: str | None = None) -> dict[str, Any]:
    """Reconcile one exchange (or every configured one); return the summaries."""
    rt = context.current()
    names = [exchange] if exchange else list(rt.config().exchanges)
    return {name: rt.run_async(reconcile(rt, name), 300) for name in names}


__all__ = ["Run", "WeightMeter", "fill", "new_trades", "normal_status", "reconcile"]
