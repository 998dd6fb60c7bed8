"""The position ledger: what the fleet holds per exchange account and symbol, built from fills.

Every fill the order gate learns (an order's answer with ``filled``/``average``/``fee``, a
paper fill, an order found or reconciled by client order id) is applied here **once**: the
ledger remembers, per client order id, how much of the order's fill it has applied, and
applies only what is new. A redelivered or reconciled answer of the same order adds nothing;
a later answer that filled more adds the difference. Each apply is one optimistic Redis
transaction (WATCH/MULTI) over the exchange's keys (one ``{hash tag}``), so two workers
applying fills of the same symbol at once both count, once each.

The arithmetic (average cost, fees, realised and unrealised P&L) is ``resilience/position.py``;
the layout is in ``core/keys.py`` (``{ledger:<x>}:...``); docs/POSITIONS.md is the user's view.

API (sync; the ``a``-prefixed twins are coroutines on the running loop's client)::

    ledger = Ledger(redis, keys)
    ledger.position(exchange, symbol) -> Position | None       # open positions only
    ledger.positions(exchange=None) -> list[Position]          # every exchange when None
    ledger.apply_fill(exchange, symbol, fill, plan=..., mode=..., wallet=...) -> Applied
    ledger.set_protection(exchange, symbol, kind, order_ids) -> Position | None
    ledger.exits(exchange) -> dict[str, dict]                 # why the fleet closed each
    ledger.realized_today(exchange) -> float                  # UTC day, closed and reduced
    ledger.daily_pnl(exchange, prices) -> float               # realised today + unrealised
    ledger.history(exchange) -> list[Position]                # closed, newest first
    ledger.marks(exchange) -> dict[str, Mark]                 # last price seen per symbol
    ledger.wallet(exchange) -> dict[str, float]               # the paper wallet's balances

``wallet`` (paper mode against a real exchange): the starting balances of the paper wallet.
The fill then also moves the wallet's balances, in the same transaction, and is refused
(:class:`~core.errors.OrderRefusedError`) when the wallet cannot pay for it.

Warning: one ledger per exchange key: paper and live fills of the same exchange key share
it (each position records the ``mode`` that opened it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, cast

import redis
import redis.exceptions

from core.errors import OrderRefusedError, RetryableError
from core.keys import KeySpace
from resilience.position import DUST, Folded, PlanRef, Position, Trade, assets, fold

if TYPE_CHECKING:
    from ratelimit.backends.clients import RedisClients

__all__ = ["Applied", "Fill", "Ledger", "Mark", "PlanRef", "Position", "fill_from_order"]

#: How many closed positions each exchange's history keeps.
HISTORY = 1000
#: How long the ledger remembers what it applied of an order's fills.
SEEN_SECONDS = 30 * 86400
DAY_SECONDS = 8 * 86400
#: Optimistic transactions retried when another worker changed the keys meanwhile.
ATTEMPTS = 100
Kind = Literal["exchange", "watch"]


@dataclass(frozen=True)
class Fill:
    """What an order has filled so far (cumulative), as its latest answer says."""

    client_order_id: str
    side: Literal["buy", "sell"]
    filled: float
    average: float
    #: Every fee of the order so far, valued in the quote currency.
    fee: float = 0.0
    #: The part of the fees taken in the base asset, in base units.
    base_fee: float = 0.0


@dataclass(frozen=True)
class Applied:
    """The outcome of applying a fill: before, after, what it realised, whether it was new."""

    before: Position | None
    position: Position | None
    realized: float = 0.0
    applied: bool = False
    dropped: float = 0.0


@dataclass(frozen=True)
class Mark:
    """The last price the ledger saw for a symbol, and when (epoch seconds)."""

    price: float
    at: float


def fill_from_order(symbol: str, order: dict[str, Any]) -> Fill | None:
    """Return the fill an order answer reports (ccxt's unified order), or None if none."""
    filled = float(order.get("filled") or 0.0)
    cid = order.get("clientOrderId")
    if filled <= DUST or not cid or order.get("side") not in ("buy", "sell"):
        return None
    average = float(order.get("average") or 0.0) or float(order.get("cost") or 0.0) / filled
    if average <= 0:
        return None
    base, quote = assets(symbol)
    fee = base_fee = 0.0
    fees = order.get("fees") or ([order["fee"]] if order.get("fee") else [])
    for one in fees:
        cost = float((one or {}).get("cost") or 0.0)
        currency = (one or {}).get("currency")
        if currency == base:
            base_fee += cost
            fee += cost * average
        elif currency in (quote, None):
            fee += cost
        # a fee in a third asset (BNB) has no price here: it does not move this position
    return Fill(str(cid), order["side"], filled, average, fee, base_fee)


def _today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Ledger:
    """Positions, realised P&L and the paper wallet of every exchange account, in Redis."""

    def __init__(
        self, redis_client: redis.Redis | RedisClients, keys: KeySpace, *, spot: bool = True
    ) -> None:
        from ratelimit.backends.clients import RedisClients

        self.clients = (
            redis_client if isinstance(redis_client, RedisClients) else RedisClients(redis_client)
        )
        self.redis, self.keys, self.spot = self.clients.sync, keys, spot

    # -- reads ---------------------------------------------------------------------------

    def position(self, exchange: str, symbol: str) -> Position | None:
        """Return the open position of ``symbol`` on ``exchange``, or None."""
        raw = self.redis.hget(self.keys.ledger_positions(exchange), symbol)
        return _open(raw)

    async def aposition(self, exchange: str, symbol: str) -> Position | None:
        """Return the open position of ``symbol`` on ``exchange``, or None."""
        raw = await self.clients.aio().hget(self.keys.ledger_positions(exchange), symbol)
        return _open(raw)

    def exchanges(self) -> list[str]:
        """Return the exchanges the ledger has positions or history for."""
        found = cast(set[bytes], self.redis.smembers(self.keys.ledger_exchanges()))
        return sorted(x.decode() for x in found)

    def positions(self, exchange: str | None = None) -> list[Position]:
        """Return the open positions of ``exchange`` (of every exchange when None)."""
        found: list[Position] = []
        for name in [exchange] if exchange else self.exchanges():
            raw = cast(dict[bytes, bytes], self.redis.hgetall(self.keys.ledger_positions(name)))
            found += [p for p in map(_open, raw.values()) if p is not None]
        return sorted(found, key=lambda p: (p.exchange, p.symbol))

    async def apositions(self, exchange: str) -> list[Position]:
        """Return the open positions of ``exchange``."""
        raw = await self.clients.aio().hgetall(self.keys.ledger_positions(exchange))
        found = [p for p in map(_open, raw.values()) if p is not None]
        return sorted(found, key=lambda p: p.symbol)

    def realized_today(self, exchange: str) -> float:
        """Return the P&L realised on ``exchange`` today (UTC), over every symbol."""
        raw = cast(dict[bytes, bytes], self.redis.hgetall(self._day(exchange)))
        return sum(float(v) for v in raw.values())

    async def arealized_today(self, exchange: str) -> float:
        """Return the P&L realised on ``exchange`` today (UTC), over every symbol."""
        raw = await self.clients.aio().hgetall(self._day(exchange))
        return sum(float(v) for v in raw.values())

    def marks(self, exchange: str) -> dict[str, Mark]:
        """Return the last price seen per symbol on ``exchange``."""
        raw = cast(dict[bytes, bytes], self.redis.hgetall(self.keys.ledger_marks(exchange)))
        return _marks(raw)

    async def amarks(self, exchange: str) -> dict[str, Mark]:
        """Return the last price seen per symbol on ``exchange``."""
        return _marks(await self.clients.aio().hgetall(self.keys.ledger_marks(exchange)))

    async def amark(self, exchange: str, symbol: str, price: float) -> None:
        """Record ``price`` as the last price seen for ``symbol``."""
        value = json.dumps({"price": price, "at": time.time()})
        await self.clients.aio().hset(self.keys.ledger_marks(exchange), symbol, value)

    def daily_pnl(self, exchange: str, prices: dict[str, float] | None = None) -> float:
        """Return today's realised P&L plus the open positions' unrealised P&L.

        Each position is valued at ``prices[symbol]`` or else at its last mark.
        """
        marks = self.marks(exchange)
        return self.realized_today(exchange) + _unrealized(
            self.positions(exchange), marks, prices or {}
        )

    async def adaily_pnl(self, exchange: str, prices: dict[str, float] | None = None) -> float:
        """Return today's realised P&L plus the open positions' unrealised P&L."""
        marks = await self.amarks(exchange)
        opened = await self.apositions(exchange)
        return await self.arealized_today(exchange) + _unrealized(opened, marks, prices or {})

    def history(self, exchange: str, count: int = 20) -> list[Position]:
        """Return the latest closed positions of ``exchange``, newest first."""
        raw = cast(list[bytes], self.redis.lrange(self.keys.ledger_history(exchange), 0, count - 1))
        return [Position.from_json(r) for r in raw]

    def wallet(self, exchange: str, starting: dict[str, float] | None = None) -> dict[str, float]:
        """Return the paper wallet's balances (``starting`` before its first fill)."""
        raw = cast(dict[bytes, bytes], self.redis.hgetall(self.keys.ledger_wallet(exchange)))
        return _wallet(raw, starting)

    async def awallet(
        self, exchange: str, starting: dict[str, float] | None = None
    ) -> dict[str, float]:
        """Return the paper wallet's balances (``starting`` before its first fill)."""
        raw = await self.clients.aio().hgetall(self.keys.ledger_wallet(exchange))
        return _wallet(raw, starting)

    # -- writes --------------------------------------------------------------------------

    def apply_fill(
        self,
        exchange: str,
        symbol: str,
        fill: Fill,
        *,
        plan: PlanRef | None = None,
        mode: str = "",
        wallet: dict[str, float] | None = None,
    ) -> Applied:
        """Apply what ``fill`` adds to what the ledger has of its order (see the docstring)."""
        watched = self._watched(exchange, fill.client_order_id)
        with self.redis.pipeline() as pipe:
            for _ in range(ATTEMPTS):
                try:
                    pipe.watch(*watched)  # type: ignore[no-untyped-call]
                    state = [pipe.get(watched[0]), pipe.hget(watched[1], symbol)]
                    state.append(pipe.hgetall(watched[2]) if wallet is not None else {})
                    step = self._step(exchange, symbol, fill, state, plan, mode, wallet)
                    if step.applied:
                        pipe.multi()
                        self._writes(pipe, exchange, symbol, fill, step)
                        pipe.execute()
                    else:
                        pipe.unwatch()
                    self.redis.sadd(self.keys.ledger_exchanges(), exchange)
                    return step.outcome
                except redis.exceptions.WatchError:
                    continue
        raise RetryableError(f"ledger of {exchange} {symbol}: too many concurrent writers")

    async def aapply_fill(
        self,
        exchange: str,
        symbol: str,
        fill: Fill,
        *,
        plan: PlanRef | None = None,
        mode: str = "",
        wallet: dict[str, float] | None = None,
    ) -> Applied:
        """Apply what ``fill`` adds to what the ledger has of its order (see the docstring)."""
        client = self.clients.aio()
        watched = self._watched(exchange, fill.client_order_id)
        async with client.pipeline() as pipe:
            for _ in range(ATTEMPTS):
                try:
                    await pipe.watch(*watched)
                    state = [await pipe.get(watched[0]), await pipe.hget(watched[1], symbol)]
                    state.append(await pipe.hgetall(watched[2]) if wallet is not None else {})
                    step = self._step(exchange, symbol, fill, state, plan, mode, wallet)
                    if step.applied:
                        pipe.multi()
                        self._writes(pipe, exchange, symbol, fill, step)
                        await pipe.execute()
                    else:
                        await pipe.unwatch()
                    await client.sadd(self.keys.ledger_exchanges(), exchange)
                    return step.outcome
                except redis.exceptions.WatchError:
                    continue
        raise RetryableError(f"ledger of {exchange} {symbol}: too many concurrent writers")

    def set_protection(
        self, exchange: str, symbol: str, kind: Kind | None, order_ids: Iterable[str] = ()
    ) -> Position | None:
        """Record how the open position of ``symbol`` is protected (None: unprotected).

        Returns the position as stored, or None when there is no open position.
        """
        key = self.keys.ledger_positions(exchange)
        with self.redis.pipeline() as pipe:
            for _ in range(ATTEMPTS):
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    position = _open(pipe.hget(key, symbol))
                    if position is None:
                        pipe.unwatch()
                        return None
                    protection = None
                    if kind is not None:
                        protection = {"kind": kind, "order_ids": list(order_ids), "at": _now_iso()}
                    position = _replace(position, protection=protection)
                    pipe.multi()
                    pipe.hset(key, symbol, position.to_json())
                    pipe.execute()
                    return position
                except redis.exceptions.WatchError:
                    continue
        raise RetryableError(f"ledger of {exchange} {symbol}: too many concurrent writers")

    async def arecord_exit(self, exchange: str, symbol: str, record: dict[str, Any]) -> None:
        """Record why the fleet closed ``symbol``'s position (reason, order, at)."""
        value = json.dumps({**record, "at": _now_iso()})
        await self.clients.aio().hset(self.keys.ledger_exits(exchange), symbol, value)

    def exits(self, exchange: str) -> dict[str, dict[str, Any]]:
        """Return why each symbol's last position was closed by the fleet."""
        raw = cast(dict[bytes, bytes], self.redis.hgetall(self.keys.ledger_exits(exchange)))
        return {k.decode(): json.loads(v) for k, v in raw.items()}

    async def aset_protection(
        self, exchange: str, symbol: str, kind: Kind | None, order_ids: Iterable[str] = ()
    ) -> Position | None:
        """Record how the open position of ``symbol`` is protected (see set_protection)."""
        import asyncio

        return await asyncio.to_thread(self.set_protection, exchange, symbol, kind, order_ids)

    # -- the transaction -----------------------------------------------------------------

    def _watched(self, exchange: str, cid: str) -> list[str]:
        return [
            self.keys.ledger_fill(exchange, cid),
            self.keys.ledger_positions(exchange),
            self.keys.ledger_wallet(exchange),
        ]

    def _day(self, exchange: str) -> str:
        return self.keys.ledger_realized(exchange, _today())

    def _step(  # noqa: PLR0917 - the transaction's pure middle, called from both loops
        self,
        exchange: str,
        symbol: str,
        fill: Fill,
        state: list[Any],
        plan: PlanRef | None,
        mode: str,
        wallet: dict[str, float] | None,
    ) -> _Step:
        seen_raw, position_raw, wallet_raw = state
        seen = json.loads(seen_raw) if seen_raw else {}
        before = _open(position_raw)
        amount = fill.filled - float(seen.get("filled", 0.0))
        if amount <= DUST:
            return _Step(Applied(before, before), None, seen, None)
        cost = fill.filled * fill.average - float(seen.get("cost", 0.0))
        trade = Trade(
            fill.side,
            amount,
            cost / amount,
            max(fill.fee - float(seen.get("fee", 0.0)), 0.0),
            max(fill.base_fee - float(seen.get("base_fee", 0.0)), 0.0),
        )
        stored = Position.from_json(position_raw) if position_raw else None
        folded = fold(
            stored,
            trade,
            exchange=exchange,
            symbol=symbol,
            at=_now_iso(),
            cid=fill.client_order_id,
            plan=plan,
            spot=self.spot,
            mode=mode,
        )
        balances = None
        if wallet is not None:
            balances = _moved(_wallet(wallet_raw, wallet), symbol, trade, folded)
        seen = {
            "filled": fill.filled,
            "cost": fill.filled * fill.average,
            "fee": fill.fee,
            "base_fee": fill.base_fee,
        }
        after = folded.position if folded.position.open else None
        outcome = Applied(before, after, folded.realized, True, folded.dropped)
        return _Step(outcome, folded, seen, balances)

    def _writes(self, pipe: Any, exchange: str, symbol: str, fill: Fill, step: _Step) -> None:
        folded = cast(Folded, step.folded)
        keys = self.keys
        pipe.set(keys.ledger_fill(exchange, fill.client_order_id), json.dumps(step.seen))
        pipe.expire(keys.ledger_fill(exchange, fill.client_order_id), SEEN_SECONDS)
        if folded.position.open:
            pipe.hset(keys.ledger_positions(exchange), symbol, folded.position.to_json())
        else:
            pipe.hdel(keys.ledger_positions(exchange), symbol)
        if folded.closed is not None:
            pipe.lpush(keys.ledger_history(exchange), folded.closed.to_json())
            pipe.ltrim(keys.ledger_history(exchange), 0, HISTORY - 1)
        if folded.realized:
            pipe.hincrbyfloat(self._day(exchange), symbol, folded.realized)
            pipe.expire(self._day(exchange), DAY_SECONDS)
        if step.balances is not None:
            pipe.hset(keys.ledger_wallet(exchange), mapping=_encoded(step.balances))
        mark = json.dumps({"price": fill.average, "at": time.time()})
        pipe.hset(keys.ledger_marks(exchange), symbol, mark)


@dataclass(frozen=True)
class _Step:
    outcome: Applied
    folded: Folded | None
    seen: dict[str, Any]
    balances: dict[str, float] | None

    @property
    def applied(self) -> bool:
        return self.folded is not None


def _open(raw: Any) -> Position | None:
    if not raw:
        return None
    position = Position.from_json(raw)
    return position if position.open else None


def _replace(position: Position, **changes: Any) -> Position:
    import dataclasses

    return dataclasses.replace(position, **changes)


def _marks(raw: dict[bytes, bytes]) -> dict[str, Mark]:
    found = {}
    for symbol, value in raw.items():
        data = json.loads(value)
        found[symbol.decode()] = Mark(float(data["price"]), float(data["at"]))
    return found


def _unrealized(
    positions: list[Position], marks: dict[str, Mark], prices: dict[str, float]
) -> float:
    total = 0.0
    for position in positions:
        price = prices.get(position.symbol) or (
            marks[position.symbol].price if position.symbol in marks else position.entry
        )
        total += position.unrealized(price)
    return total


def _wallet(raw: dict[bytes, bytes], starting: dict[str, float] | None) -> dict[str, float]:
    if not raw:
        return dict(starting or {})
    return {k.decode(): float(v) for k, v in raw.items()}


def _encoded(balances: dict[str, float]) -> dict[str, str]:
    return {asset: repr(amount) for asset, amount in balances.items()}


def _moved(
    balances: dict[str, float], symbol: str, trade: Trade, folded: Folded
) -> dict[str, float]:
    """Return the paper wallet after ``trade``; refuse what it cannot pay or deliver."""
    base, quote = assets(symbol)
    amount = trade.amount - folded.dropped
    moved = dict(balances)
    if trade.side == "buy":
        pay = trade.amount * trade.price + trade.fee
        if pay > moved.get(quote, 0.0) + 1e-9:
            raise OrderRefusedError(
                f"paper wallet: {pay:.8g} {quote} needed, {moved.get(quote, 0.0):.8g} held"
            )
        moved[quote] = moved.get(quote, 0.0) - pay
        moved[base] = moved.get(base, 0.0) + trade.amount
    else:
        if amount <= DUST:
            raise OrderRefusedError(f"paper wallet: no {base} to sell")
        moved[base] = max(moved.get(base, 0.0) - amount, 0.0)
        moved[quote] = (
            moved.get(quote, 0.0) + amount * trade.price - trade.fee * (amount / trade.amount)
        )
    return moved
