"""The strategy agent's rules: weigh both cases into a plan, or hold.

Trade only when one case beats the other by ``min_edge``. Size from volatility and
confidence: risk ``risk_fraction`` of the per-symbol position limit, scaled by confidence,
over a stop two ATRs away; never more than the per-order notional limit. Exits: stop at two
ATRs, take profit at three. Without an ATR there is no stop, so there is no trade.

:func:`aim` then weighs the signal against the position the ledger holds (docs/POSITIONS.md,
"Decisions") and returns the plan's target (open, add, hold, reduce, close, reverse), the
order that reaches it, and the position it saw:

- flat: a buy opens; a sell holds (spot: nothing to sell, no short);
- a long whose plan is live (its horizon has not passed): a buy holds (never entered twice
  in the same direction); a long whose plan expired: a buy adds, within the room left under
  ``max_position_per_symbol`` (none left: hold);
- a long and a sell: close (a sell of the amount held), or reduce (sell ``REDUCE_FRACTION``)
  or hold when the LLM says so; a reverse is a close (spot has no short);
- a hold signal holds.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from agents.types import AnalystReport, Features, Holding, Rung, Target, TradePlan
from core.config import RiskLimits

#: The share of the position a ``reduce`` sells.
REDUCE_FRACTION = 0.5
#: A horizon is one number and one unit (``30m``, ``4h``, ``1d``), as the fleet watch reads it
#: (``resilience/exits.py``): a horizon it cannot read never expires, for both.
_HORIZON = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def size_for(
    entry: float, atr: float, confidence: float, limits: RiskLimits, risk_fraction: float = 0.02
) -> float:
    """Return the size that risks ``risk_fraction`` of the position limit over a 2-ATR stop."""
    risk_usd = limits.max_position_per_symbol * risk_fraction * confidence
    return min(risk_usd / (2 * atr), limits.max_notional_per_order / entry)


def decide(
    symbol: str,
    long: AnalystReport,
    short: AnalystReport,
    features: Features,
    limits: RiskLimits,
    *,
    min_edge: float = 0.15,
    risk_fraction: float = 0.02,
) -> TradePlan:
    """Return the plan for one symbol."""
    edge = long.confidence - short.confidence
    why = (
        f"long {long.confidence:.2f} ({long.thesis}); short {short.confidence:.2f} ({short.thesis})"
    )
    if features.atr is None or features.atr <= 0:
        return TradePlan(
            action="hold", symbol=symbol, rationale=f"no ATR, no stop: {why}", rung=Rung.ABSTAIN
        )
    if abs(edge) < min_edge:
        return TradePlan(
            action="hold",
            symbol=symbol,
            confidence=abs(edge),
            rationale=f"edge {edge:+.2f} below {min_edge}: {why}",
        )
    action = "buy" if edge > 0 else "sell"
    entry = features.close
    confidence = min(1.0, abs(edge) * 2)
    size = size_for(entry, features.atr, confidence, limits, risk_fraction)
    sign = 1 if action == "buy" else -1
    return TradePlan(
        action=action,
        symbol=symbol,
        size=size,
        entry=entry,
        stop_loss=entry - sign * 2 * features.atr,
        take_profit=entry + sign * 3 * features.atr,
        horizon="4h",
        confidence=confidence,
        rationale=f"edge {edge:+.2f}: {why}",
        rung=Rung.RULES,
    )


def horizon_seconds(horizon: str | None) -> float | None:
    """Return a horizon ("4h", "90m", "1d") in seconds, or None when it names none."""
    match = _HORIZON.match((horizon or "").lower())
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)] if match else None


def expires_at(holding: Holding) -> datetime | None:
    """Return when the plan that opened ``holding`` expires (None: it never does)."""
    seconds = horizon_seconds(holding.horizon)
    if seconds is None or holding.opened_at is None:
        return None
    return holding.opened_at + timedelta(seconds=seconds)


def is_live(holding: Holding, now: datetime) -> bool:
    """Return whether the position's plan is live: its horizon has not passed.

    A position without a horizon it can read (opened by a bare order) stays live: the fleet
    never enters it again on its own.
    """
    until = expires_at(holding)
    return until is None or now < until


def allowed_targets(
    signal: str, holding: Holding | None, now: datetime, *, spot: bool = True
) -> tuple[Target, ...]:
    """Return the targets a signal may take on ``holding``; the first is the rules' choice."""
    if signal == "hold":
        return ("hold",)
    if holding is None:
        return ("open", "hold") if signal == "buy" or not spot else ("hold",)
    if (signal == "buy") == (holding.side == "long"):
        return ("hold",) if is_live(holding, now) else ("add", "hold")
    return ("close", "reduce", "hold", "reverse")


def _held_text(holding: Holding | None, now: datetime) -> str:
    if holding is None:
        return "no position"
    until = expires_at(holding)
    state = "live" if is_live(holding, now) else "expired"
    when = f" {state} until {until.isoformat(timespec='minutes')}" if until else " live"
    return f"{holding.side} {holding.amount:.8g} at {holding.entry:.8g} (plan{when})"


def aim(
    plan: TradePlan,
    holding: Holding | None,
    *,
    now: datetime,
    limits: RiskLimits,
    spot: bool = True,
) -> TradePlan:
    """Return ``plan`` (a signal) turned into a target on ``holding`` and the order reaching it.

    ``plan.target`` (the LLM's choice) is kept when the position allows it; otherwise the
    rules' choice stands (module docstring).
    """
    signal = plan.signal or plan.action
    allowed = allowed_targets(signal, holding, now, spot=spot)
    target = plan.target if plan.target in allowed else allowed[0]
    seen = _held_text(holding, now)
    aimed = plan.model_copy(update={"signal": signal, "position": holding, "target": target})
    if target == "open":
        return aimed.model_copy(update={"rationale": f"open ({seen}): {plan.rationale}"})
    if holding is None or target == "hold":
        return _hold(aimed, signal, seen)
    entry = plan.entry or holding.entry
    if target == "add":
        room = limits.max_position_per_symbol / entry - holding.amount
        if room <= 0:
            return _hold(aimed, signal, f"{seen}; no room under the position limit")
        return aimed.model_copy(
            update={"size": min(plan.size, room), "rationale": f"add ({seen}): {plan.rationale}"}
        )
    share = REDUCE_FRACTION if target == "reduce" else 1.0
    note = "; spot has no short: reverse = close" if target == "reverse" else ""
    return aimed.model_copy(
        update={
            "action": "sell" if holding.side == "long" else "buy",
            "size": holding.amount * share,
            "entry": entry,
            "stop_loss": None,
            "take_profit": None,
            "rationale": f"{target} ({seen}{note}): {plan.rationale}",
        }
    )


def _hold(plan: TradePlan, signal: str, seen: str) -> TradePlan:
    held = plan.position
    if signal == "hold":
        why = "nothing to do"
    elif held is None:
        why = "nothing to sell" if signal == "sell" else "the strategist holds"
    elif (signal == "buy") == (held.side == "long"):
        why = "not entered twice"
    else:
        why = "the position is kept"
    return plan.model_copy(
        update={
            "action": "hold",
            "target": "hold",
            "size": 0.0,
            "stop_loss": None,
            "take_profit": None,
            "rationale": f"hold ({seen}; {signal} signal: {why}): {plan.rationale}",
        }
    )
