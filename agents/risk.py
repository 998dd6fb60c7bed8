"""The risk guard: code after every decision, LLM or not. Nothing passes it unchecked.

Checks, in order: kill switch; price sanity (entry within ``max_price_deviation`` of the
live market); open orders below ``max_open_orders``; daily loss above ``-max_daily_loss``
(new buys stop; sells that reduce risk may go on); notional per order (the size is cut so
that even a fill 0.5% worse than the entry stays within the limit); position per symbol
after a buy (cut to what is left); a sell no larger than the position held (spot: nothing
to short).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agents.types import TradePlan
from core.config import RiskLimits

#: Room left between the notional limit and the size, for the price a market order pays.
SLIPPAGE_BUFFER = 0.005


@dataclass(frozen=True)
class RiskState:
    """What the guard must know about the account and the market right now."""

    market_price: float
    position: float = 0.0
    open_orders: int = 0
    #: Today's (UTC) P&L from the position ledger: realised today plus open positions'
    #: unrealised P&L (resilience/account.py).
    daily_pnl: float = 0.0
    kill_switch: bool = False


@dataclass(frozen=True)
class RiskDecision:
    """The guard's verdict: approved or not, the size it allows, and why."""

    approved: bool
    size: float
    reasons: list[str] = field(default_factory=list)


def _refusal(plan: TradePlan, limits: RiskLimits, state: RiskState, entry: float) -> str | None:
    deviation = abs(entry - state.market_price) / state.market_price
    rules = [
        (state.kill_switch, "kill switch is on"),
        (
            deviation > limits.max_price_deviation,
            f"entry {entry:g} is {deviation:.1%} from the market {state.market_price:g} "
            f"(limit {limits.max_price_deviation:.1%})",
        ),
        (
            state.open_orders >= limits.max_open_orders,
            f"{state.open_orders} open orders (limit {limits.max_open_orders})",
        ),
        (
            plan.action == "buy" and state.daily_pnl <= -limits.max_daily_loss,
            f"daily loss {state.daily_pnl:g} reached the limit {limits.max_daily_loss:g}",
        ),
        (
            plan.action == "buy" and state.position * entry >= limits.max_position_per_symbol,
            "position limit reached",
        ),
        (plan.action == "sell" and state.position <= 0, "nothing to sell (spot, no position)"),
    ]
    return next((reason for broken, reason in rules if broken), None)


def _allowed_size(
    plan: TradePlan, limits: RiskLimits, state: RiskState, entry: float
) -> tuple[float, list[str]]:
    size, reasons = plan.size, []
    # a market order fills at the ask (and beyond, through the book): leave room for it
    worst = max(entry, state.market_price) * (1 + SLIPPAGE_BUFFER)
    if size * worst > limits.max_notional_per_order:
        size = limits.max_notional_per_order / worst
        reasons.append(f"size cut to the {limits.max_notional_per_order:g} notional limit")
    room = (
        limits.max_position_per_symbol / entry - state.position
        if plan.action == "buy"
        else state.position
    )
    if size > room:
        size = room
        reasons.append(
            "size cut to the position limit"
            if plan.action == "buy"
            else "size cut to the position held"
        )
    return size, reasons


def check(plan: TradePlan, limits: RiskLimits, state: RiskState) -> RiskDecision:
    """Return whether ``plan`` may trade, and at what size."""
    if plan.action == "hold":
        return RiskDecision(False, 0.0, ["hold: nothing to execute"])
    entry = plan.entry or state.market_price
    refusal = _refusal(plan, limits, state, entry)
    if refusal is not None:
        return RiskDecision(False, 0.0, [refusal])
    size, reasons = _allowed_size(plan, limits, state, entry)
    return RiskDecision(True, size, reasons or ["within limits"])
