"""The long and the short analyst's rules: the deterministic rung of the ladder.

Each signal adds to or takes from a neutral 0.5 confidence, and is recorded as evidence with
the number it rests on: trend slope, RSI, MACD histogram, position in the Bollinger band,
order-book imbalance, news sentiment. The short case mirrors the long one. The invalidation
level is two ATRs against the case.
"""

from __future__ import annotations

from typing import Literal

from agents.types import AnalystReport, Evidence, Features, Rung

Side = Literal["long", "short"]


def _clip(x: float, low: float = -1.0, high: float = 1.0) -> float:
    return max(low, min(high, x))


def signals(
    features: Features, news_sentiment: float, news_count: int
) -> list[tuple[Evidence, float]]:
    """Return each signal as evidence with its contribution to the *long* case (+ helps)."""
    out: list[tuple[Evidence, float]] = []
    f = features
    if f.trend is not None:
        out.append(
            (
                Evidence(name="trend", value=f.trend, meaning="slope per candle / price"),
                0.15 * _clip(f.trend / 0.002),
            )
        )
    if f.rsi is not None:
        out.append(
            (
                Evidence(name="rsi", value=f.rsi, meaning="below 30 oversold, above 70 overbought"),
                0.10 * _clip((50 - f.rsi) / 30),
            )
        )
    if f.macd_hist is not None and f.close > 0:
        out.append(
            (
                Evidence(name="macd_hist", value=f.macd_hist, meaning="MACD minus signal"),
                0.15 * _clip(f.macd_hist / (f.close * 0.001)),
            )
        )
    if f.bollinger_upper is not None and f.bollinger_lower is not None:
        half = (f.bollinger_upper - f.bollinger_lower) / 2
        position = 0.0 if half <= 0 else (f.close - (f.bollinger_lower + half)) / half
        out.append(
            (
                Evidence(
                    name="bollinger_position",
                    value=position,
                    meaning="-1 at the lower band, +1 at the upper",
                ),
                -0.05 * _clip(position),
            )
        )
    out.append(
        (
            Evidence(
                name="book_imbalance", value=f.book_imbalance, meaning="+1 all bids, -1 all asks"
            ),
            0.10 * f.book_imbalance,
        )
    )
    if news_count:
        weight = min(1.0, news_count / 3)
        out.append(
            (
                Evidence(
                    name="news_sentiment",
                    value=news_sentiment,
                    meaning=f"mean of {news_count} trustworthy headlines",
                ),
                0.10 * weight * news_sentiment,
            )
        )
    return out


def analyse(
    side: Side, features: Features, news_sentiment: float = 0.0, news_count: int = 0
) -> AnalystReport:
    """Return the rules-based case for ``side``."""
    sign = 1.0 if side == "long" else -1.0
    found = signals(features, news_sentiment, news_count)
    confidence = _clip(0.5 + sign * sum(c for _, c in found), 0.0, 1.0)
    supporting = sorted(found, key=lambda pair: -sign * pair[1])
    evidence = [e for e, _ in supporting]
    best = [e.name for e, c in supporting if sign * c > 0][:3]
    thesis = (
        f"{side} case from {', '.join(best)}" if best else f"no signal supports the {side} case"
    )
    invalidation = None
    if features.atr is not None:
        invalidation = features.close - sign * 2 * features.atr
    return AnalystReport(
        side=side,
        thesis=thesis,
        evidence=evidence,
        confidence=confidence,
        invalidation=invalidation,
        rung=Rung.RULES,
    )
