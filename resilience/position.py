"""A position and the average-cost arithmetic of a fill: pure data in, data out.

The ledger (``resilience/ledger.py``) keeps these in Redis; everything here is a function
of its arguments, so the arithmetic is tested without a server.

Average-cost method, fees included:

- a fill in the position's direction (or on a flat position) adds: the entry becomes the
  amount-weighted average of the fill prices, and the fill's fee joins ``open_fees`` (fees
  of the amount still held);
- a fill against it reduces: ``realized = direction * (price - entry) * reduced - fee share
  of this fill - open_fees share of the reduced amount``; the entry price does not change;
- ``unrealized(last) = direction * (last - entry) * amount - open_fees``, so realised plus
  unrealised is the P&L net of every fee paid.

Spot positions are long only: a sell reduces, and what a sell fills beyond the position is
not a short (it is dropped, and said so in the outcome). With ``spot=False`` it reverses.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from agents.types import Holding

Side = Literal["long", "short", "flat"]
#: Below this a position's amount is zero (float sums of partial fills leave dust).
DUST = 1e-12
#: How many client order ids a position remembers.
FILLS_KEPT = 50


def assets(symbol: str) -> tuple[str, str]:
    """Return a symbol's base and quote assets (``BTC/USDT:USDT`` -> ``BTC``, ``USDT``)."""
    base, _, rest = symbol.partition("/")
    return base, rest.partition(":")[0]


@dataclass(frozen=True)
class PlanRef:
    """The plan an order came from: its run and the exits it planned."""

    run_id: str | None = None
    stop_loss: float | None = None
    take_profit: float | None = None
    horizon: str | None = None


@dataclass(frozen=True)
class Trade:
    """The part of an order's fills not yet applied: side, amount, price and fee (quote)."""

    side: Literal["buy", "sell"]
    amount: float
    price: float
    fee: float = 0.0
    #: Fee taken in the base asset: a buy receives ``amount - base_fee``.
    base_fee: float = 0.0


@dataclass(frozen=True)
class Position:
    """One symbol's position on one exchange account, as the ledger keeps it."""

    exchange: str
    symbol: str
    side: Side = "flat"
    amount: float = 0.0
    entry: float = 0.0
    fees: float = 0.0
    open_fees: float = 0.0
    realized_pnl: float = 0.0
    opened_at: str | None = None
    closed_at: str | None = None
    run_id: str | None = None
    stop_loss: float | None = None
    take_profit: float | None = None
    horizon: str | None = None
    #: How the exits are protected: None, or ``{"kind": "exchange"|"watch", "order_ids"}``.
    protection: dict[str, Any] | None = None
    fills: list[str] = field(default_factory=list)
    mode: str = ""

    @property
    def direction(self) -> int:
        """Return +1 for long, -1 for short, 0 for flat."""
        return {"long": 1, "short": -1}.get(self.side, 0)

    @property
    def open(self) -> bool:
        """Return whether the position holds anything."""
        return self.side != "flat" and self.amount > DUST

    def unrealized(self, last: float) -> float:
        """Return the P&L of the amount held at ``last``, its entry fees included."""
        if not self.open:
            return 0.0
        return self.direction * (last - self.entry) * self.amount - self.open_fees

    def as_dict(self) -> dict[str, Any]:
        """Return the position as plain JSON-able data."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """Return the position as the JSON the ledger stores."""
        return json.dumps(self.as_dict())

    @classmethod
    def from_json(cls, raw: str | bytes) -> Position:
        """Return a position from the ledger's JSON (unknown fields are ignored)."""
        data = json.loads(raw)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class Folded:
    """A fill applied: the position after it, the P&L it realised, and what was dropped."""

    position: Position
    realized: float
    #: What a spot sell filled beyond the position held (not a short: not kept).
    dropped: float = 0.0
    #: The position this fill closed (or reversed), as it closed; None if it is still open.
    closed: Position | None = None


def fold(
    before: Position | None,
    trade: Trade,
    *,
    exchange: str,
    symbol: str,
    at: str,
    cid: str,
    plan: PlanRef | None = None,
    spot: bool = True,
    mode: str = "",
) -> Folded:
    """Return the position after ``trade``, by the average-cost method (module docstring)."""
    position = before or Position(exchange, symbol, mode=mode)
    sign = 1 if trade.side == "buy" else -1
    fills = [*position.fills, cid][-FILLS_KEPT:] if cid not in position.fills else position.fills
    if not position.open or position.direction == sign:
        if sign < 0 and spot:  # spot: nothing to sell short
            return Folded(dataclasses.replace(position, fills=fills), 0.0, trade.amount)
        return Folded(_add(position, trade, sign, at, cid, plan, mode), 0.0)
    held = position.amount
    reduced = min(trade.amount, held)
    share = reduced / trade.amount
    charged = position.open_fees * reduced / held
    realized = position.direction * (trade.price - position.entry) * reduced
    realized -= trade.fee * share + charged
    left = held - reduced
    after = dataclasses.replace(
        position,
        amount=left if left > DUST else 0.0,
        side=position.side if left > DUST else "flat",
        open_fees=position.open_fees - charged if left > DUST else 0.0,
        fees=position.fees + trade.fee * share,
        realized_pnl=position.realized_pnl + realized,
        closed_at=None if left > DUST else at,
        fills=fills,
    )
    closed = None if after.open else after
    rest = trade.amount - reduced
    if rest <= DUST:
        return Folded(after, realized, 0.0, closed)
    if spot:
        return Folded(after, realized, rest, closed)
    remainder = dataclasses.replace(trade, amount=rest, fee=trade.fee * (1 - share))
    fresh = Position(exchange, symbol, mode=mode)
    return Folded(_add(fresh, remainder, sign, at, cid, plan, mode), realized, 0.0, closed)


def _add(  # noqa: PLR0917 - fold's private step, called twice with the same arguments
    position: Position,
    trade: Trade,
    sign: int,
    at: str,
    cid: str,
    plan: PlanRef | None,
    mode: str,
) -> Position:
    received = max(trade.amount - (trade.base_fee if sign > 0 else 0.0), DUST)
    # the entry is what the amount held cost per unit: a fee taken in the base asset
    # raises it (the same quote paid for less), a quote fee is kept in open_fees
    opening = not position.open
    held = 0.0 if opening else position.amount
    amount = held + received
    entry = (position.entry * held + trade.price * trade.amount) / amount
    plan = plan or PlanRef()
    fills = position.fills if cid in position.fills else [*position.fills, cid][-FILLS_KEPT:]
    quote_fee = trade.fee - trade.base_fee * trade.price if trade.base_fee else trade.fee
    return dataclasses.replace(
        position,
        side="long" if sign > 0 else "short",
        amount=amount,
        entry=entry,
        fees=trade.fee if opening else position.fees + trade.fee,
        open_fees=(0.0 if opening else position.open_fees) + max(quote_fee, 0.0),
        opened_at=at if opening else position.opened_at,
        closed_at=None,
        run_id=plan.run_id if opening else position.run_id,
        stop_loss=plan.stop_loss if opening else position.stop_loss,
        take_profit=plan.take_profit if opening else position.take_profit,
        horizon=plan.horizon if opening else position.horizon,
        protection=None if opening else position.protection,
        realized_pnl=0.0 if opening else position.realized_pnl,
        fills=[cid] if opening else fills,
        mode=mode or position.mode,
    )


def as_holding(position: Position | None, protection: str | None) -> Holding | None:
    """Return ``position`` as the strategy sees it (None: flat), protected by ``protection``."""
    if position is None or not position.open or position.side == "flat":
        return None
    opened = datetime.fromisoformat(position.opened_at) if position.opened_at else None
    return Holding(
        side=position.side,
        amount=position.amount,
        entry=position.entry,
        stop_loss=position.stop_loss,
        take_profit=position.take_profit,
        horizon=position.horizon,
        opened_at=opened,
        run_id=position.run_id or None,
        protection=protection,
    )
