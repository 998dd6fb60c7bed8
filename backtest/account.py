"""The replay's account: cash and one position, moved by fills through the live arithmetic.

Every fill goes through ``resilience.position.fold`` (the ledger's average-cost method, fees
included), so the replay's P&L is the live ledger's. Fees are paid in the quote currency.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from agents.types import Holding
from resilience.position import PlanRef, Position, Trade, as_holding, fold


def iso(ms: int) -> str:
    """Return a millisecond timestamp as an ISO-8601 UTC string."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


@dataclass(frozen=True)
class Fill:
    """One fill: what moved, at which price, what it cost, and why."""

    time: int
    symbol: str
    side: Literal["buy", "sell"]
    amount: float
    #: The bar's price before slippage (the open, or the stop/take-profit level).
    reference: float
    price: float
    fee: float
    kind: str
    realized: float
    cash_after: float
    position_after: float

    @property
    def slippage_cost(self) -> float:
        """Return what slippage cost this fill, in the quote currency."""
        return abs(self.price - self.reference) * self.amount


@dataclass
class Account:
    """Cash and the symbol's position; :meth:`fill` is the only way either changes."""

    exchange: str
    symbol: str
    cash: float
    fee_rate: float
    position: Position | None = None
    fills: list[Fill] = field(default_factory=list)
    #: Realised P&L per UTC day (``YYYY-MM-DD``), for the risk guard's daily loss.
    realized_by_day: dict[str, float] = field(default_factory=dict)
    #: Closed positions (round trips), as they closed.
    closed: list[Position] = field(default_factory=list)

    @property
    def amount(self) -> float:
        """Return the amount held (0 when flat)."""
        return self.position.amount if self.position is not None and self.position.open else 0.0

    def equity(self, price: float) -> float:
        """Return cash plus the position valued at ``price``."""
        return self.cash + self.amount * price

    def daily_pnl(self, ms: int, price: float) -> float:
        """Return today's realised P&L plus the open position's unrealised P&L at ``price``."""
        held = self.position.unrealized(price) if self.position is not None else 0.0
        return self.realized_by_day.get(iso(ms)[:10], 0.0) + held

    def holding(self) -> Holding | None:
        """Return the position as the strategy sees it (None: flat)."""
        p = self.position
        return as_holding(p, "watch" if p is not None and (p.stop_loss or p.take_profit) else None)

    def fill(
        self,
        *,
        ms: int,
        side: Literal["buy", "sell"],
        amount: float,
        reference: float,
        price: float,
        kind: str,
        plan: PlanRef | None = None,
    ) -> Fill | None:
        """Apply one fill (None when there was nothing to fill: a spot sell while flat)."""
        if side == "buy":
            # never spend more than the cash: the order is cut to what it can pay
            amount = min(amount, self.cash / (price * (1 + self.fee_rate)))
        else:
            amount = min(amount, self.amount)
        if amount <= 0:
            return None
        fee = amount * price * self.fee_rate
        folded = fold(
            self.position,
            Trade(side=side, amount=amount, price=price, fee=fee),
            exchange=self.exchange,
            symbol=self.symbol,
            at=iso(ms),
            cid=f"bt-{len(self.fills)}",
            plan=plan,
            mode="backtest",
        )
        self.position = folded.position
        self.cash += -amount * price - fee if side == "buy" else amount * price - fee
        day = iso(ms)[:10]
        self.realized_by_day[day] = self.realized_by_day.get(day, 0.0) + folded.realized
        if folded.closed is not None:
            self.closed.append(folded.closed)
        done = Fill(
            time=ms,
            symbol=self.symbol,
            side=side,
            amount=amount,
            reference=reference,
            price=price,
            fee=fee,
            kind=kind,
            realized=folded.realized,
            cash_after=self.cash,
            position_after=self.amount,
        )
        self.fills.append(done)
        return done
