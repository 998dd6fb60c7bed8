"""The report's picture: the equity against buy-and-hold, and the drawdown below it.

Drawn twice from the same curves: inline SVG for report.html (:func:`svg`) and a PNG
beside it (:func:`png`, report.png, rasterised by :mod:`backtest.png`). Both thin the
curves to at most :data:`MOST` points, keeping the last. The equity is blue, buy-and-hold
grey, the drawdown a red area hanging from 0 down to the deepest fall.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from backtest.metrics import drawdowns
from backtest.png import Canvas, text_width
from backtest.replay import Result

#: Points drawn per curve at most.
MOST = 1200

EQUITY_RGB = (31, 95, 191)
HOLD_RGB = (140, 140, 140)
DRAWDOWN_RGB = (230, 160, 160)
DRAWDOWN_EDGE_RGB = (179, 51, 51)
TEXT_RGB = (40, 40, 40)
FRAME_RGB = (215, 215, 215)

#: report.png's width and height in pixels.
PNG_SIZE = (900, 440)


@dataclass(frozen=True)
class Curves:
    """The thinned curves of a replay and the ranges they are drawn in."""

    equity: list[float]
    hold: list[float]
    drawdown: list[float]

    @property
    def low(self) -> float:
        """Return the lowest value of equity and buy-and-hold."""
        return min(*self.equity, *self.hold)

    @property
    def high(self) -> float:
        """Return the highest value of equity and buy-and-hold."""
        return max(*self.equity, *self.hold)

    @property
    def deepest(self) -> float:
        """Return the deepest drawdown (never 0, so the panel has a height)."""
        return min(*self.drawdown, -1e-9)


def thin(values: Sequence[float], most: int = MOST) -> list[float]:
    """Return every n-th value so at most about ``most`` are left, and always the last."""
    stride = max(1, len(values) // most)
    kept = list(values[::stride])
    if kept[-1] != values[-1]:
        kept.append(values[-1])
    return kept


def curves(result: Result) -> Curves:
    """Return the replay's equity, buy-and-hold (from the same cash) and drawdown, thinned."""
    cash, first = result.settings.cash, result.marks[0].close
    equity = [m.equity for m in result.marks]
    hold = [cash * m.close / first for m in result.marks]
    falls = [float(v) for v in drawdowns(np.array(equity, dtype=float))]
    return Curves(thin(equity), thin(hold), thin(falls))


def _path(values: Sequence[float], low: float, high: float, width: int, height: int) -> str:
    span = (high - low) or 1.0
    step = width / max(len(values) - 1, 1)
    return " ".join(
        f"{'M' if i == 0 else 'L'}{i * step:.1f},{height - (v - low) / span * height:.1f}"
        for i, v in enumerate(values)
    )


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def svg(result: Result, width: int = 900) -> str:
    """Return an SVG of the equity against buy-and-hold, and the drawdown below it."""
    c = curves(result)
    e, h, d = c.equity, c.hold, c.drawdown
    low, high, deepest = c.low, c.high, c.deepest
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="420" '
        f'viewBox="0 0 {width} 420" font-family="sans-serif" font-size="12">'
        f'<rect width="{width}" height="420" fill="#fff"/>'
        f'<g transform="translate(0,20)"><path d="{_path(h, low, high, width, 260)}" '
        f'fill="none" stroke="{_hex(HOLD_RGB)}" stroke-width="1"/>'
        f'<path d="{_path(e, low, high, width, 260)}" fill="none" stroke="{_hex(EQUITY_RGB)}" '
        'stroke-width="1.5"/></g>'
        f'<text x="4" y="14">equity (blue) {e[-1]:,.0f} vs buy-and-hold (grey) {h[-1]:,.0f}; '
        f"range {low:,.0f} to {high:,.0f}</text>"
        f'<g transform="translate(0,310)"><path d="{_path(d, deepest, 0.0, width, 100)} '
        f'L{width},0 L0,0 Z" fill="{_hex(DRAWDOWN_RGB)}" '
        f'stroke="{_hex(DRAWDOWN_EDGE_RGB)}"/></g>'
        f'<text x="4" y="304">drawdown (max {deepest:.1%})</text></svg>'
    )


@dataclass(frozen=True)
class _Panel:
    """A plot area of the PNG: pixel box and the value range mapped onto it."""

    left: int
    top: int
    width: int
    height: int
    low: float
    high: float

    def points(self, values: Sequence[float]) -> list[tuple[float, float]]:
        step = (self.width - 1) / max(len(values) - 1, 1)
        return [(self.left + i * step, self.y(v)) for i, v in enumerate(values)]

    def y(self, value: float) -> float:
        span = (self.high - self.low) or 1.0
        return self.top + (self.high - value) / span * (self.height - 1)


def png(result: Result) -> bytes:
    """Return report.png: the picture of :func:`svg` as a PNG of :data:`PNG_SIZE`."""
    c = curves(result)
    width, height = PNG_SIZE
    canvas = Canvas(width, height)
    top = _Panel(10, 30, width - 20, 260, c.low, c.high)
    falls = _Panel(10, 322, width - 20, 108, c.deepest, 0.0)
    for panel in (top, falls):
        for y in (panel.top - 1, panel.top + panel.height):
            canvas.line((0, y), (width - 1, y), FRAME_RGB)
    _legend(canvas, c)
    canvas.polyline(top.points(c.hold), HOLD_RGB)
    canvas.polyline(top.points(c.equity), EQUITY_RGB, wide=2)
    edge = falls.points(c.drawdown)
    for x in range(falls.left, falls.left + falls.width):
        depth = _at(edge, x)
        if depth > falls.top + 0.5:  # no area where there is no fall
            canvas.column(x, falls.top, depth, DRAWDOWN_RGB)
    canvas.polyline(edge, DRAWDOWN_EDGE_RGB)
    canvas.text(10, 300, f"drawdown (max {c.deepest:.1%})", TEXT_RGB)
    return canvas.png()


def _legend(canvas: Canvas, c: Curves) -> None:
    x = 10
    for colour, words in (
        (EQUITY_RGB, f"equity {c.equity[-1]:,.0f}"),
        (HOLD_RGB, f"buy and hold {c.hold[-1]:,.0f}"),
    ):
        canvas.line((x, 13), (x + 24, 13), colour, wide=2)
        canvas.text(x + 32, 7, words, TEXT_RGB)
        x += 32 + text_width(words) + 30
    span = f"range {c.low:,.0f} to {c.high:,.0f}"
    canvas.text(canvas.width - 10 - text_width(span), 7, span, TEXT_RGB)


def _at(points: list[tuple[float, float]], x: int) -> float:
    """Return the y of the polyline ``points`` at column ``x`` (linear between points)."""
    if len(points) == 1:
        return points[0][1]
    left, step = points[0][0], points[1][0] - points[0][0]
    i = min(max(int((x - left) / step), 0), len(points) - 2)
    (x0, y0), (x1, y1) = points[i], points[i + 1]
    share = 0.0 if x1 == x0 else min(max((x - x0) / (x1 - x0), 0.0), 1.0)
    return y0 + (y1 - y0) * share
