"""The figures of a replay, from its marks (one per bar close) and its fills.

Returns are per bar of the data (hourly for hourly candles); sharpe and sortino annualise
their mean over the standard (sortino: downside) deviation by the square root of the bars
in a 365-day year, with a zero risk-free rate. max_drawdown is the deepest fall of the
equity from its running peak, as a negative fraction. cagr compounds total_return over the
span's length in 365-day years. buy_and_hold_return is the last close over the first close
of the replayed bars, minus one, exactly.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from backtest.account import iso
from backtest.replay import Result

YEAR_MS = 365 * 86_400_000


FloatArray = NDArray[np.float64]


def drawdowns(equity: FloatArray) -> FloatArray:
    """Return each point's fall from the running peak, as a fraction (0 or negative)."""
    peak = np.maximum.accumulate(equity)
    return equity / peak - 1.0


def _ratio(mean: float, deviation: float, per_year: float) -> float:
    return 0.0 if deviation == 0 else mean / deviation * math.sqrt(per_year)


def summary(result: Result, assumptions: list[str]) -> dict[str, Any]:
    """Return summary.json's figures (module docstring)."""
    s = result.settings
    equity = np.array([m.equity for m in result.marks], dtype=float)
    returns = np.diff(equity) / equity[:-1]
    per_year = YEAR_MS / result.base_ms
    downside = float(np.sqrt(np.mean(np.minimum(returns, 0.0) ** 2))) if len(returns) else 0.0
    first, last = result.marks[0], result.marks[-1]
    years = (last.time - first.time) / YEAR_MS
    total = float(equity[-1] / s.cash - 1.0)
    wins = [r for r in result.round_trips if r > 0]
    traded = sum(f.amount * f.price for f in result.fills)
    return {
        "symbol": s.symbol,
        "exchange": s.exchange,
        "timeframe": s.timeframe,
        "start": iso(first.time),
        "end": iso(last.time),
        "bars": len(result.bars),
        "cash": s.cash,
        "final_equity": float(equity[-1]),
        "total_return": total,
        "buy_and_hold_return": result.bars[-1].close / result.bars[0].close - 1.0,
        "cagr": (1.0 + total) ** (1.0 / years) - 1.0 if years > 0 and total > -1 else -1.0,
        "sharpe": _ratio(float(np.mean(returns)), float(np.std(returns)), per_year),
        "sortino": _ratio(float(np.mean(returns)), downside, per_year),
        "max_drawdown": float(drawdowns(equity).min()),
        "win_rate": len(wins) / len(result.round_trips) if result.round_trips else 0.0,
        "exposure": sum(1 for m in result.marks if m.position > 0) / len(result.marks),
        "turnover": traded / s.cash,
        "trades": len(result.round_trips),
        "fills": len(result.fills),
        "fees": sum(f.fee for f in result.fills),
        "slippage_cost": sum(f.slippage_cost for f in result.fills),
        "decisions": len(result.decisions),
        "fee_rate": s.fee_rate,
        "slippage_bps": s.slippage_bps,
        "assumptions": assumptions,
    }


#: Summary fields that are the run's settings or labels, not figures to spread.
SETTINGS_FIELDS = frozenset({"cash", "fee_rate", "slippage_bps"})


def figures(summary_: dict[str, Any]) -> dict[str, float]:
    """Return the numeric figures of a summary (not its settings, labels or assumptions)."""
    return {
        k: float(v)
        for k, v in summary_.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and k not in SETTINGS_FIELDS
    }


def spread(summaries: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Return the mean, min, max and standard deviation of every figure over the runs."""
    rows = [figures(s) for s in summaries]
    out: dict[str, dict[str, float]] = {}
    for key in rows[0]:
        values = np.array([r[key] for r in rows], dtype=float)
        out[key] = {
            "mean": float(values.mean()),
            "min": float(values.min()),
            "max": float(values.max()),
            "std": float(values.std()),
        }
    return out
