"""Reconciliation: compare the fleet's orders, fills and positions with the exchange's view,
reading only what can have changed since the last run, so its cost does not grow with the
fleet's history.

One run on one exchange account:

1. **Index** what the fleet recorded since the last run (``tasks/reconcile_index.py``:
   the first run reads every execution record once, then only new ``orders:audit``
   entries; Redis only).
2. **Open orders** of the watched symbols: one request per symbol, or one for all symbols
   where the exchange offers it and it weighs less (``ALL_SYMBOLS_OPEN_ORDERS``). An open
   order the index does not hold is ``unknown`` if it carries our ``cai`` prefix (placed by
   the fleet but never recorded: a crash between placing and recording, a lost answer;
   also a ``drift`` item, and its fill, if any, applied to the ledger), else ``foreign``;
   a leg of an open position's exchange protection (the ledger's OCO ids) is
   ``protective``; an open leg of a list no open position holds is ``drift``.
3. **Orders not final** in the index (open, partially filled, outcome unknown): one still
   open on the exchange is confirmed by step 2 for free; any other is asked for by client
   order id (``checked``), and its answer becomes its last known status. An order that
   reached a final status (closed, canceled, rejected, expired, or ``missing``: the exchange
   had none) is never asked again.
4. **Protection** of the ledger's open positions (``resilience/exits.py`` ``repair``): a
   position with exits and no protection (a crash between its fill and its protection) is
   protected; a list whose legs are not among the open orders is read by its client order
   id: a leg that filled is settled (its fill applied to the ledger once, by the leg's
   client order id; the other leg's cancel confirmed), a list gone without a fill
   (cancelled, expired, rejected) is replaced. Each is reported under ``protection``.
   Only the open positions' lists are read, never the account's list history.
5. **Fills** since the last check: ``fetch_my_trades(symbol, since=...)`` per watched
   symbol, from the last fill seen (kept fleet-wide); each reported once, named by its
   client order id where the fleet knows it (an order id the index lacks is looked up once;
   when it is ours and the records lack it, its fill is applied to the ledger: ``drift``).
6. **Balances**: one ``fetch_balance``; a ledger position its asset's balance does not cover
   is ``drift``.
7. **Ledger fills** of the open positions: each must be covered by an exchange answer the
   index holds (the gate's, or an earlier run's); one that is not is asked once by client
   order id. A fill the exchange does not have, or has less of, is ``drift``; the ledger
   is left as it is.

The summary (also stored under ``fleet:reconcile:<x>``) has ``matched`` (orders newly
indexed with a final status from the exchange's own answer, and orders not final that the
exchange confirmed with the recorded side: still open, or asked), ``missing`` (asked, and
the exchange has no such order, or one of the other side), ``unknown``, ``foreign``,
``protective``, ``checked`` (orders asked by id), ``protection``, ``fills``, ``balances``,
``drift`` (``tasks/reconcile_drift.py`` describes every kind), ``errors`` (checks that could
not be made this run), ``weight`` and ``requests`` (what the run spent in the exchange's main
limit, as the fleet's limiter prices it; ``weight_by_scope`` itemises it).

Warning: at most one page of fills per symbol per run (the exchange's default page); a
larger backlog is reported over the following runs. A filled order of ours that the
records lack is found through its fills, so only on a watched symbol.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

from celery import shared_task

from core.errors import CryptoAIError
from resilience import FallbackConfig, ResilientAPIClient
from resilience.exits import repair
from resilience.ledger import Ledger, Position, fill_from_order
from resilience.order_request import order_mode
from tasks import context
from tasks import reconcile_drift as drift
from tasks.context import Runtime
from tasks.reconcile_index import Known, OrderIndex, from_order, legs_of, normal_status
from tasks.reconcile_meter import WeightMeter, metering

#: Exchanges (ccxt id) that answer every symbol's open orders in one request, with the
#: limiter scope that prices both forms (by whether a ``symbol`` is sent). The form is used
#: when it weighs less than one request per watched symbol and the exchange's profile lets
#: ccxt send it (Binance: ``options.fetchOpenOrders.warnWithoutSymbol: false``).
ALL_SYMBOLS_OPEN_ORDERS: dict[str, str] = {"binance": "GET /api/v3/openOrders"}
OUR_PREFIX = "cai"
LOCK_SECONDS = 300
#: Reads here are account state: never served from (or kept in) the cache.
FRESH = FallbackConfig(cache_enabled=False, timeout=30.0)


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
        #: The client order ids open on the exchange for the watched symbols (this run).
        self.open_cids: set[str] = set()

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
        self.open_cids = {c for c in by_cid if c}
        await self.open_ones(by_cid, summary)
        await self.index.name({str(o["id"]): c for c, o in by_cid.items() if c and o.get("id")})
        return {str(o["id"]): o for o in opened if o.get("id")}

    async def open_ones(
        self, by_cid: Mapping[str, dict[str, Any]], summary: dict[str, Any]
    ) -> None:
        """Sort the open orders: the positions' protection, the fleet's unknown, foreign."""
        held = await self.index.get(self.open_cids)
        guarding = await self.protective_ids()
        for cid, order in by_cid.items():
            known = held.get(cid)
            if cid in guarding:
                summary["protective"].append(cid)  # a leg of a position's exchange protection
            elif known is not None and known.list_cid:
                summary["drift"].append(drift.orphan_leg(self.exchange, order, known))
            elif known is None and cid.startswith(OUR_PREFIX):
                summary["unknown"].append(cid)
                applied = await self.apply_ours(str(order.get("symbol") or ""), order)
                summary["drift"].append(drift.unknown_order(self.exchange, order, applied))
            elif known is None:
                summary["foreign"].append(cid or str(order["id"]))

    async def apply_ours(self, symbol: str, order: Mapping[str, Any]) -> bool:
        """Apply the fill of an order of ours the records lack; return whether it was new."""
        filled = fill_from_order(symbol, dict(order))
        if filled is None or not symbol:
            return False
        return (await self.ledger.aapply_fill(self.exchange, symbol, filled)).applied

    async def protective_ids(self) -> set[str]:
        """Return the client order ids of the open positions' exchange protection (OCO legs)."""
        positions = await asyncio.to_thread(self.ledger.positions, self.exchange)
        return {
            str(cid)
            for p in positions
            if p.protection and p.protection.get("kind") == "exchange"
            for cid in p.protection.get("order_ids") or []
        }

    async def protection(self, summary: dict[str, Any]) -> None:
        """Protect, settle or replace the open positions' protection (``exits.repair``).

        A position of a watched symbol whose legs are among the open orders costs nothing;
        any other exchange-protected position costs one read of its list (and of its two
        legs when the list is done). The legs' final statuses go to the index. A paper
        position on an account that is not in paper mode is the paper wallet's: left alone.
        """
        paper = order_mode(self.client, self.exchange) == "paper"
        for position in await self.ledger.apositions(self.exchange):
            if position.mode == "paper" and not paper:
                continue
            open_ids = self.open_cids if position.symbol in self.symbols else None
            try:
                done = await repair(self.client, position, open_ids)
            except CryptoAIError as error:
                why = f"{type(error).__name__}: {error}"
                done = {"symbol": position.symbol, "action": "failed", "why": why}
            if done is not None:
                summary["protection"].append(done)
                await self.index.learn(legs_of(position.symbol, done), exchange_said=True)

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
        """Return the client order id of an order the index does not know (asked once).

        An order of ours the records lack (a lost answer) is reported ``unknown``, its fill
        applied to the ledger (drift ``fill``), and it is indexed with the exchange's answer.
        """
        summary["checked"] += 1
        order = await self.ask("fetch_order", {"id": order_id, "symbol": symbol})
        cid = str(order.get("clientOrderId") or "")
        if not cid:
            return cid
        await self.index.name({order_id: cid})
        held = await self.index.get([cid])
        if cid in held or not cid.startswith(OUR_PREFIX) or cid in summary["unknown"]:
            return cid
        summary["unknown"].append(cid)
        before = (await self.applied([cid]))[cid]
        applied = await self.apply_ours(symbol, order)
        if applied or drift.differs(float(order.get("filled") or 0.0), before):
            item = drift.unknown_fill(self.exchange, symbol, order, before, applied)
            summary["drift"].append(item)
        known = from_order(order, symbol)
        if known is not None and known.final:  # an open one stays unknown while open
            await self.index.learn([known], exchange_said=True)
        return cid

    async def applied(self, cids: list[str]) -> dict[str, float]:
        """Return how much of each order's fill the ledger has applied."""
        redis = self.client.clients.aio()
        return await drift.ledger_applied(redis, self.client.keys, self.exchange, cids)

    async def ledger_fills(self, summary: dict[str, Any]) -> None:
        """Report the open positions' fills the exchange does not show (``drift``).

        Confirmed for free when the index holds the exchange's answer covering the fill
        (the gate's settled answer, an earlier reconciliation); otherwise asked once by
        client order id, and the answer (``missing`` too) kept in the index.
        """
        positions = [p for p in await self.ledger.apositions(self.exchange) if p.mode != "paper"]
        owner: dict[str, Position] = {
            cid: p for p in positions for cid in p.fills if not cid.endswith("-dust")
        }
        have, records = await self.applied(list(owner)), await self.index.get(owner)
        for cid, position in sorted(owner.items()):
            if have[cid] <= 0:
                continue
            record = records.get(cid)
            if drift.unconfirmed(record, have[cid]):
                record = await self.confirm(cid, position.symbol, summary)
            if record is not None and drift.differs(have[cid], record.filled):
                summary["drift"].append(
                    drift.ledger_fill(self.exchange, position, record, have[cid])
                )

    async def confirm(self, cid: str, symbol: str, summary: dict[str, Any]) -> Known | None:
        """Ask the exchange for one order by client order id; keep its answer in the index."""
        summary["checked"] += 1
        try:
            found = await self.find(Known(cid, symbol, "", "unknown"))
        except CryptoAIError as error:
            summary["errors"].append(f"{symbol} {cid}: {type(error).__name__}: {error}")
            return None
        record = from_order(found, symbol) if found else None
        if record is None:
            record = Known(cid, symbol, "", "missing", filled=0.0)
        await self.index.learn([record], exchange_said=True)
        return record

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
        positions = await self.ledger.apositions(self.exchange)
        summary["drift"] += drift.balances(self.exchange, positions, total)

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
            "protection": [],
            "drift": [],
            "errors": [],
        }
        with metering(self.meter):
            await self.orders(summary)
            await self.protection(summary)
            await self.fills(summary)
            await self.balances(summary)
            await self.ledger_fills(summary)
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
