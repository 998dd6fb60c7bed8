"""The fleet's index of its orders for reconciliation: last known status by client order id.

Reconciliation asks the exchange only about orders that can still change, so it needs to
know, without asking, which orders are final. The index (``core/keys.py``: the
``{recon:<x>}`` keys) holds every order of the fleet on one exchange account with its last
known status, symbol, side and exchange id, plus the set of those not final (open,
partially filled, outcome unknown). It is fed from what the fleet writes anyway:

- once, on the first run (no ``records`` cursor): every execution record
  (``run:*:<x>:*:execution``) and the whole ``orders:audit`` stream, from Redis only;
- on every run after that: the ``orders:audit`` entries appended since the last run (the
  order gate writes one per decision, on every order path), each completed by the gate's
  settled claim of its client order id (the exchange's order id and status);
- the exchange's own answers during reconciliation (``tasks/reconcile.py``).

The legs of a position's protective order list (Binance OCO) are indexed too, from the
list's audit entry, with the list's client order id (``list_cid``): their fills are then
the fleet's when the fills are read, and an open leg no open position guards is reported.
They are never in the set of orders not final: reconciliation follows them through their
position (``resilience/exits.py`` ``repair``), not one by one.

A final status is never replaced by a non-final one (an older answer seen late); the
exchange's own answer replaces anything.

Warning: the audit stream is capped (about 100,000 entries); if more orders than that are
decided between two runs, the oldest of them are indexed only when the exchange shows them
(open orders as ``unknown``; fills without a client order id).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from core.keys import KeySpace

#: Order statuses after which an order never changes (ccxt's, Binance's, and ``missing``:
#: the exchange had no such order when asked).
FINAL = frozenset({"closed", "filled", "canceled", "cancelled", "rejected", "expired", "missing"})
#: The gate's audit outcomes that mean the exchange has (or had) the order.
PLACED = frozenset({"exchange", "reconciled", "found"})
AUDIT_PAGE = 1000


def normal_status(status: object) -> str:
    """Return an order status in lower case; ``unknown`` when there is none."""
    text = str(status or "").strip().lower()
    return text or "unknown"


def is_final(status: object) -> bool:
    """Return True when an order with this status can no longer change."""
    return normal_status(status) in FINAL


@dataclass(frozen=True)
class Known:
    """One order as the index knows it."""

    cid: str
    symbol: str
    side: str
    status: str
    id: str = ""
    #: How much of the order the exchange said was filled (None: no answer said).
    filled: float | None = None
    #: The client order id of the order list (OCO) this order is a leg of, if any.
    list_cid: str = ""

    @property
    def final(self) -> bool:
        """Return True when the order can no longer change."""
        return is_final(self.status)

    @property
    def followed(self) -> bool:
        """Return True when reconciliation asks about it by itself (not final, no list leg)."""
        return not self.final and not self.list_cid

    def to_json(self) -> str:
        """Return the JSON stored in the index."""
        fields = {"symbol": self.symbol, "side": self.side, "status": self.status, "id": self.id}
        extra = {"filled": self.filled, "list": self.list_cid}
        return json.dumps({**fields, **extra, "at": time.time()})

    @classmethod
    def from_json(cls, cid: str, raw: bytes | str) -> Known:
        """Return the record stored under ``cid``."""
        data = json.loads(raw)
        filled = data.get("filled")
        return cls(
            cid,
            data["symbol"],
            data["side"],
            data["status"],
            data.get("id") or "",
            None if filled is None else float(filled),
            data.get("list") or "",
        )


def merge(old: Known | None, new: Known, *, exchange_said: bool = False) -> Known:
    """Return what the index should hold after learning ``new`` about an order.

    Fields ``new`` lacks keep their old values; a final status stays unless ``new`` is
    final too or is the exchange's own answer (``exchange_said``).
    """
    if old is None:
        return new
    status = new.status
    if old.final and not new.final and not exchange_said:
        status = old.status
    if new.status == "unknown" and not exchange_said:
        status = old.status
    filled = new.filled if new.filled is not None else old.filled
    if not exchange_said and None not in (new.filled, old.filled):
        filled = max(float(new.filled or 0.0), float(old.filled or 0.0))
    return Known(
        new.cid,
        new.symbol or old.symbol,
        new.side or old.side,
        status,
        new.id or old.id,
        filled,
        new.list_cid or old.list_cid,
    )


def from_order(order: Mapping[str, Any], symbol: str = "") -> Known | None:
    """Return the record of a ccxt order (as the exchange or a record has it), or None."""
    cid = str(order.get("clientOrderId") or "")
    if not cid or order.get("status") == "simulated":
        return None
    filled = order.get("filled")
    return Known(
        cid,
        str(order.get("symbol") or symbol),
        str(order.get("side") or ""),
        normal_status(order.get("status")),
        str(order.get("id") or ""),
        None if filled is None else float(filled),
    )


def legs_from_audit(
    entry: Mapping[str, str], exchange: str, claim: Mapping[str, Any] | None
) -> list[Known]:
    """Return the legs of the order list (OCO) one ``orders:audit`` entry placed, if any.

    The legs are read from the gate's settled claim of the list (its answer: Binance's list
    report, ``orders`` with each leg's ``orderId`` and ``clientOrderId``).
    """
    if entry.get("exchange") != exchange or entry.get("mode") == "paper":
        return []
    if "/orderList" not in entry.get("endpoint", "") or entry.get("outcome") not in PLACED:
        return []
    listed = ((claim or {}).get("answer") or {}).get("order") or {}
    if not isinstance(listed, dict) or not entry.get("client_order_id"):
        return []
    return [
        Known(
            str(leg["clientOrderId"]),
            entry.get("symbol", ""),
            entry.get("side", ""),
            "open",
            str(leg.get("orderId") or ""),
            list_cid=entry["client_order_id"],
        )
        for leg in listed.get("orders") or []
        if isinstance(leg, dict) and leg.get("clientOrderId")
    ]


def from_audit(
    entry: Mapping[str, str], exchange: str, claim: Mapping[str, Any] | None
) -> Known | None:
    """Return what one ``orders:audit`` entry says about an order on ``exchange``, or None.

    Refused, paper and other exchanges' entries say nothing; a failed write whose outcome
    was unknown is an order that may exist (status ``unknown``, asked on the next run).
    ``claim`` is the gate's settled claim of the client order id (its answer's order).
    """
    cid = entry.get("client_order_id", "")
    if entry.get("exchange") != exchange or not cid or entry.get("mode") == "paper":
        return None
    if "/orderList" in entry.get("endpoint", ""):
        # an order list (a position's OCO protection) is no order: its legs are, found among
        # the open orders as ``protective``, and the position's watch settles the list
        return None
    outcome = entry.get("outcome", "")
    if outcome == "failed" and "OutcomeUnknownError" in entry.get("reasons", ""):
        return Known(cid, entry.get("symbol", ""), entry.get("side", ""), "unknown")
    if outcome not in PLACED:
        return None
    order = ((claim or {}).get("answer") or {}).get("order") or {}
    known = from_order(order, entry.get("symbol", "")) if isinstance(order, dict) else None
    status = normal_status(entry.get("status"))
    if known is not None and known.cid == cid:
        # the claim's order is the create's answer; a later cancel's entry knows better
        status = status if status != "unknown" else known.status
        return Known(cid, known.symbol, known.side, status, known.id, known.filled)
    return Known(cid, entry.get("symbol", ""), entry.get("side", ""), status)


def legs_of(symbol: str, done: Mapping[str, Any]) -> list[Known]:
    """Return the records of the legs a protection repair read from the exchange (its
    ``legs``: ``resilience/exits.py`` ``repair``)."""
    return [
        Known(
            str(leg["client_order_id"]),
            symbol,
            "sell",
            normal_status(leg.get("status")),
            str(leg.get("id") or ""),
            float(leg.get("filled") or 0.0),
            str(done.get("list") or ""),
        )
        for leg in done.get("legs") or []
    ]


def symbol_of_key(key: str) -> str:
    """Return the exchange symbol segment of an execution record's key."""
    return key.rsplit(":", 2)[-2]


class OrderIndex:
    """The ``{recon:<x>}`` keys of one exchange account (asyncio Redis client)."""

    def __init__(self, redis: Any, keys: KeySpace, exchange: str) -> None:
        self.redis, self.keys, self.exchange = redis, keys, exchange
        self.orders_key = keys.reconcile_orders(exchange)
        self.pending_key = keys.reconcile_pending(exchange)
        self.ids_key = keys.reconcile_ids(exchange)
        self.cursor_key = keys.reconcile_cursor(exchange)
        self.trades_key = keys.reconcile_trades(exchange)

    async def get(self, cids: Iterable[str]) -> dict[str, Known]:
        """Return the records of these client order ids that the index holds."""
        wanted = sorted(set(cids))
        if not wanted:
            return {}
        raws = await self.redis.hmget(self.orders_key, wanted)
        return {c: Known.from_json(c, r) for c, r in zip(wanted, raws, strict=True) if r}

    async def pending(self) -> dict[str, Known]:
        """Return the orders whose last known status is not final."""
        cids = [
            m.decode() if isinstance(m, bytes) else m
            for m in await self.redis.smembers(self.pending_key)
        ]
        return await self.get(cids)

    async def learn(self, news: Iterable[Known], *, exchange_said: bool = False) -> list[Known]:
        """Merge ``news`` into the index; return the records that are new or changed."""
        latest: dict[str, Known] = {}
        for known in news:
            latest[known.cid] = merge(latest.get(known.cid), known, exchange_said=exchange_said)
        old = await self.get(latest)
        changed = []
        pipe = self.redis.pipeline(transaction=False)
        for cid, known in latest.items():
            record = merge(old.get(cid), known, exchange_said=exchange_said)
            if record == old.get(cid):
                continue
            changed.append(record)
            pipe.hset(self.orders_key, cid, record.to_json())
            if record.followed:
                pipe.sadd(self.pending_key, cid)
            else:
                pipe.srem(self.pending_key, cid)
            if record.id:
                pipe.hset(self.ids_key, record.id, cid)
        if changed:
            await pipe.execute()
        return changed

    async def name(self, ids: Mapping[str, str]) -> None:
        """Remember the client order id of these exchange order ids (``{id: cid}``)."""
        if ids:
            await self.redis.hset(self.ids_key, mapping=dict(ids))

    async def client_ids(self, order_ids: Iterable[str]) -> dict[str, str]:
        """Return the client order ids of these exchange order ids, where known."""
        wanted = sorted(set(order_ids))
        if not wanted:
            return {}
        raws = await self.redis.hmget(self.ids_key, wanted)
        return {i: r.decode() for i, r in zip(wanted, raws, strict=True) if r}

    async def catch_up(self) -> list[Known]:
        """Index what the fleet recorded since the last run; return the new or changed.

        The first run reads every execution record once; every run reads the audit stream
        from where the last one stopped. Redis only: nothing is asked of the exchange here.
        """
        changed: list[Known] = []
        if not await self.redis.hexists(self.cursor_key, "records"):
            changed += await self.learn(await self._records())
            await self.redis.hset(self.cursor_key, "records", repr(time.time()))
        changed += await self._audit()
        # the last word on an order wins: one record per order
        return list({k.cid: k for k in changed}.values())

    async def _records(self) -> list[Known]:
        pattern = self.keys.stage_pattern(self.exchange, "execution")
        found: list[Known] = []
        async for key in self.redis.scan_iter(match=pattern, count=500):
            outcome = json.loads(await self.redis.get(key) or b"{}")
            order = outcome.get("order") or {}
            name = key.decode() if isinstance(key, bytes) else str(key)
            known = from_order(order, symbol_of_key(name)) if isinstance(order, dict) else None
            if known is not None:
                found.append(known)
        return found

    async def _audit(self) -> list[Known]:
        raw = await self.redis.hget(self.cursor_key, "audit")
        cursor = raw.decode() if raw else "0-0"
        changed: list[Known] = []
        while True:
            page = await self.redis.xrange(
                self.keys.order_audit(), min=f"({cursor}", max="+", count=AUDIT_PAGE
            )
            if not page:
                return changed
            entries = [
                (i.decode(), {k.decode(): v.decode() for k, v in e.items()}) for i, e in page
            ]
            claims = await self._claims(e.get("client_order_id", "") for _, e in entries)
            news: list[Known] = []
            for _, e in entries:
                claim = claims.get(e.get("client_order_id", ""))
                known = from_audit(e, self.exchange, claim)
                news += [known] if known is not None else legs_from_audit(e, self.exchange, claim)
            changed += await self.learn(news)
            cursor = entries[-1][0]
            await self.redis.hset(self.cursor_key, "audit", cursor)

    async def _claims(self, cids: Iterable[str]) -> dict[str, Any]:
        wanted = sorted({c for c in cids if c})
        if not wanted:
            return {}
        raws = await self.redis.mget([self.keys.order_claim(self.exchange, c) for c in wanted])
        return {c: json.loads(r) for c, r in zip(wanted, raws, strict=True) if r}

    async def trade_cursors(self) -> dict[str, dict[str, Any]]:
        """Return the last fill seen per symbol: ``{symbol: {"ms": ..., "ids": [...]}}``."""
        raw = await self.redis.hgetall(self.trades_key)
        return {k.decode(): json.loads(v) for k, v in raw.items()}

    async def save_trade_cursor(self, symbol: str, cursor: Mapping[str, Any]) -> None:
        """Remember the last fill seen on ``symbol``."""
        await self.redis.hset(self.trades_key, symbol, json.dumps(dict(cursor)))
