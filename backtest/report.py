"""The output files of a replay: summary.json, decisions.csv, trades.csv, equity.csv,
report.png and report.html (the equity and drawdown against buy-and-hold, the figures, the
walk-forward windows and the seeds, the assumptions; inline SVG, nothing loaded from the
network); and those of a grid: summary.json, cells.csv and report.html."""

from __future__ import annotations

import csv
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from backtest import charts
from backtest.account import iso
from backtest.metrics import drawdowns, summary
from backtest.replay import LOOKBACK, Result, Settings

FILES = (
    "summary.json", "decisions.csv", "trades.csv", "equity.csv", "report.png", "report.html",
)  # fmt: skip
GRID_FILES = ("summary.json", "cells.csv", "report.html")

#: The figures the page's tables show per window, seed or cell.
COLUMNS = (
    "total_return", "buy_and_hold_return", "cagr", "sharpe", "sortino", "max_drawdown",
    "win_rate", "exposure", "trades", "fees",
)  # fmt: skip
PERCENT = frozenset(
    {"total_return", "buy_and_hold_return", "cagr", "max_drawdown", "win_rate", "exposure"}
)
#: summary.json blocks the page draws as tables of their own.
BLOCKS = frozenset({"windows", "windows_spread", "seeds", "assumptions"})


def assumptions_for(s: Settings, *, news: int, llm: Mapping[str, Any] | None = None) -> list[str]:
    """Return every assumption a replay with these settings rests on (docs/BACKTEST.md);
    ``llm``: the run's LLM usage (``Result.llm_usage``), None for a rules replay."""
    return [
        f"decisions at each {s.timeframe} close; the agents see the last {LOOKBACK} "
        f"{s.timeframe} candles closed at or before the decision time (longer timeframes "
        "resampled from closed base candles only)",
        _who_decides(llm),
        (
            f"{news} news items, each seen only by decisions after it was published"
            if news
            else "no news file: the agents saw no news (news sentiment 0)"
        ),
        "no order book in the data: spread 0 and book imbalance 0; bid = ask = the close",
        f"orders fill in full at the next bar's open moved {s.slippage_bps:g} bps against "
        f"the order, paying a {s.fee_rate:g} fee rate on the notional, in the quote currency",
        "buys are cut to the cash available; spot only, no shorting, no leverage",
        "stops and take-profits trigger on the bar's low and high; when both are touched in "
        "one bar the stop fills first; a stop fills at its price (the open if the bar opened "
        "through it) less the slippage; a take-profit fills at its price, no slippage",
        "an expired horizon closes the position at the first bar open at or after expiry; "
        "the strategy sees the symbol flat from the expiry on",
        f"the live risk guard's limits: notional {s.limits.max_notional_per_order:g} per "
        f"order, {s.limits.max_position_per_symbol:g} per symbol, daily loss "
        f"{s.limits.max_daily_loss:g} (UTC days), no open orders besides the one pending",
        "an order decided at the last close has no bar to fill on and is dropped",
        "returns per bar; sharpe and sortino annualised by sqrt(bars in 365 days), "
        "risk-free rate 0",
        "buy_and_hold_return: last close / first close - 1 of the replayed bars; equity "
        "is marked at each bar close from the first close on",
    ]


def _who_decides(llm: Mapping[str, Any] | None) -> str:
    if llm is None:
        return (
            "the rules rung of the live ladder decides (analysts.analyse, strategy.decide, "
            "strategy.aim, risk.check); the LLM is not asked (--llm asks it)"
        )
    return (
        "the live ladder decides: each analyst asks the LLM (agents.llm.ask_case), then "
        "stands on its answer of up to 900 s before, then its rules; the strategist asks the "
        "LLM (ask_plan), then its rules; then strategy.aim and risk.check. Every answer is "
        f"recorded in {llm['record']} by prompt hash, data time and sampling "
        f"({llm['sampling']}) and replayed from there at no cost; an answer off the schema "
        "is recorded as such and falls to the rules the same way; a timeout or an "
        "unreachable server is not recorded (a rerun asks again)"
    )


def assumptions(result: Result, *, news: int) -> list[str]:
    """Return every assumption the run rests on, in words (docs/BACKTEST.md)."""
    return assumptions_for(result.settings, news=news, llm=result.llm_usage)


def write(
    result: Result, out: Path, *, news: int = 0, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write every output file into ``out`` and return the summary (with ``extra`` blocks:
    ``windows``, ``windows_spread``, ``seeds``)."""
    out.mkdir(parents=True, exist_ok=True)
    figures = summary(result, assumptions(result, news=news))
    figures.update(extra or {})
    if result.llm_usage is not None:
        figures["llm"] = result.llm_usage
    _json(out / "summary.json", figures)
    _csv(
        out / "decisions.csv",
        (
            "timestamp", "symbol", "action", "size", "price", "rung", "reason", "rungs",
            "fallback_reason",
        ),
        [
            (
                iso(d.time), d.symbol, d.action, f"{d.size:.10g}", f"{d.price:.10g}", d.rung,
                d.reason, d.rungs, d.fallback_reason,
            )
            for d in result.decisions
        ],
    )  # fmt: skip
    _csv(
        out / "trades.csv",
        (
            "timestamp", "symbol", "side", "kind", "amount", "reference_price", "price",
            "slippage_cost", "fee", "realized_pnl", "cash_after", "position_after",
        ),
        [
            (
                iso(f.time), f.symbol, f.side, f.kind, f"{f.amount:.10g}",
                f"{f.reference:.10g}", f"{f.price:.10g}", f"{f.slippage_cost:.10g}",
                f"{f.fee:.10g}", f"{f.realized:.10g}", f"{f.cash_after:.10g}",
                f"{f.position_after:.10g}",
            )
            for f in result.fills
        ],
    )  # fmt: skip
    first = result.marks[0].close
    equity = np.array([m.equity for m in result.marks], dtype=float)
    falls = drawdowns(equity)
    _csv(
        out / "equity.csv",
        ("timestamp", "close", "cash", "position", "equity", "buy_and_hold", "drawdown"),
        [
            (
                iso(m.time), f"{m.close:.10g}", f"{m.cash:.10g}", f"{m.position:.10g}",
                f"{m.equity:.10g}", f"{result.settings.cash * m.close / first:.10g}",
                f"{dd:.10g}",
            )
            for m, dd in zip(result.marks, falls, strict=True)
        ],
    )  # fmt: skip
    (out / "report.png").write_bytes(charts.png(result))
    (out / "report.html").write_text(page(result, figures))
    return figures


def write_grid(gathered: dict[str, Any], out: Path) -> None:
    """Write a grid's summary.json, cells.csv (one row per cell) and report.html."""
    out.mkdir(parents=True, exist_ok=True)
    _json(out / "summary.json", gathered)
    head = ("cell", "symbol", "window", "seed", "ran_on", "start", "end", "bars", *COLUMNS)
    _csv(
        out / "cells.csv",
        (*head, "error"),
        [[_plain(c.get(k)) for k in head] + [c.get("error") or ""] for c in gathered["cells"]],
    )
    (out / "report.html").write_text(grid_page(gathered))


def _json(path: Path, value: dict[str, Any]) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")


def _csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _plain(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.10g}" if isinstance(value, float) else str(value)


def _fmt(value: Any, key: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:+.2%}" if key in PERCENT else f"{value:.6g}"
    return str(value)


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Return an HTML table; every cell is escaped here."""
    top = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in rows
    )
    return f'<table border="1" cellspacing="0" cellpadding="3"><tr>{top}</tr>{body}</table>'


def _row(figures: dict[str, Any]) -> list[str]:
    return [_fmt(figures.get(k), k) for k in COLUMNS]


def _spread_row(spread: dict[str, dict[str, float]] | None) -> list[str]:
    """Return the mean of each column with its range: ``+1.20% [-0.50%, +3.10%]``."""
    if not spread:
        return ["-"] * len(COLUMNS)
    return [
        f"{_fmt(s['mean'], k)} [{_fmt(s['min'], k)}, {_fmt(s['max'], k)}]" if s else "-"
        for k in COLUMNS
        for s in [spread.get(k)]
    ]


def _when(figures: dict[str, Any]) -> list[str]:
    return [str(figures.get("start") or "-")[:16], str(figures.get("end") or "-")[:16]]


def _section(title: str, body: str) -> str:
    return f"<h2>{html.escape(title)}</h2>{body}"


def _windows(figures: dict[str, Any]) -> str:
    parts = figures["windows"]
    rows = [[str(k), *_when(w), str(w["bars"]), *_row(w)] for k, w in enumerate(parts, 1)]
    rows.append(["all", "", "", "", *_spread_row(figures.get("windows_spread"))])
    return _section(
        "Walk-forward windows", _table(["window", "start", "end", "bars", *COLUMNS], rows)
    )


def _seeds(seeds: dict[str, Any]) -> str:
    runs = seeds["runs"]
    rows = [[str(r["seed"]), *_row(r)] for r in runs]
    rows.append(["all", *_spread_row(seeds.get("spread"))])
    text = _section("Seeds", f"<p>random: {html.escape(str(seeds['random']))}</p>")
    text += _table(["seed", *COLUMNS], rows)
    if not any("windows" in r for r in runs):
        return text
    per = [
        [str(r["seed"]), str(k), *_when(w), *_row(w)]
        for r in runs
        for k, w in enumerate(r.get("windows", []), 1)
    ]
    per += [
        ["all", str(w["window"]), *_when(w), *_spread_row(w.get("spread"))]
        for w in seeds.get("windows", [])
    ]
    head = ["seed", "window", "start", "end", *COLUMNS]
    return text + _section("Windows per seed", _table(head, per))


def _other(key: str, value: Any) -> str:
    """Return a block the page has no table of its own for, as keys and values."""
    if isinstance(value, dict):
        rows = [[str(k), v if isinstance(v, str) else json.dumps(v)] for k, v in value.items()]
    else:
        rows = [["", json.dumps(value)]]
    return _section(key, _table(["", ""], rows))


def _assumptions(notes: Sequence[str]) -> str:
    return (
        "<h2>Assumptions</h2><ul>" + "".join(f"<li>{html.escape(a)}</li>" for a in notes) + "</ul>"
    )


def _document(title: str, body: str) -> str:
    t = html.escape(title)
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{t}</title></head>'
        f"<body><h1>{t}</h1>{body}</body></html>\n"
    )


def page(result: Result, figures: dict[str, Any]) -> str:
    """Return the self-contained HTML report: the chart, the figures, the windows and seeds
    when there are any, and the assumptions."""
    scalars = {k: v for k, v in figures.items() if not isinstance(v, dict | list)}
    body = charts.svg(result)
    body += "<p>The same picture is report.png, beside this page.</p>"
    body += _table(["figure", "value"], [[k, _fmt(v)] for k, v in scalars.items()])
    if "windows" in figures:
        body += _windows(figures)
    if "seeds" in figures:
        body += _seeds(figures["seeds"])
    for key, value in figures.items():
        if key not in BLOCKS and isinstance(value, dict | list):
            body += _other(key, value)
    body += _assumptions(figures["assumptions"])
    return _document(f"backtest {figures['symbol']} {figures['start']} to {figures['end']}", body)


def grid_page(gathered: dict[str, Any]) -> str:
    """Return the grid's self-contained HTML page: every cell, per symbol, the failures."""
    g = gathered["grid"]
    body = (
        f"<p>{g['cells']} cells ({g['failed']} failed), {g['walk_forward']} walk-forward "
        f"windows x {g['seeds']} seeds, ran on {html.escape(str(g['ran']))}; random: "
        f"{html.escape(str(g['random']))}</p>"
    )
    none = ["-"] * len(COLUMNS)
    rows = [
        [
            c["cell"],
            c["ran_on"],
            *_when(c),
            *(none if "error" in c else _row(c)),
            c.get("error") or "",
        ]
        for c in gathered["cells"]
    ]
    body += _section("Cells", _table(["cell", "ran on", "start", "end", *COLUMNS, "error"], rows))
    per = [
        [symbol, str(s["cells"]), str(s["failed"]), *_spread_row(s["spread"])]
        for symbol, s in gathered["symbols"].items()
    ]
    body += _section("Per symbol", _table(["symbol", "cells", "failed", *COLUMNS], per))
    for symbol, s in gathered["symbols"].items():
        if s.get("windows"):
            rows = [
                [str(w["window"]), *_when(w), *_spread_row(w["seeds_spread"])] for w in s["windows"]
            ]
            title = f"{symbol}: each window across the seeds"
            body += _section(title, _table(["window", "start", "end", *COLUMNS], rows))
    body += _assumptions(gathered["assumptions"])
    return _document(f"backtest grid {', '.join(g['symbols'])}", body)
