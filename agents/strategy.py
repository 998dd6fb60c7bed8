"""The strategy agent's rules: weigh both cases into a plan, or hold.

Trade only when one case beats the other by ``min_edge``. Size from volatility and
confidence: risk ``risk_fraction`` of the per-symbol position limit, scaled by confidence,
over a stop two ATRs away; never more than the per-order notional limit. Exits: stop at two
ATRs, take profit at three. Without an ATR there is no stop, so there is no trade.
"""

from __future__ import annotations

from agents.types import AnalystReport, Features, Rung, TradePlan
from core.config import RiskLimits


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
