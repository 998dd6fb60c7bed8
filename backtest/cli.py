"""``crypto-ai backtest``: replay the agents over a candle file and write the report."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    from agents.types import NewsItem
    from core.config import RiskLimits

app = typer.Typer(help="Replay the agents over recorded candles (docs/BACKTEST.md).")

#: A progress line every this share of the bars.
PROGRESS_STEP = 0.1


def _ms(text: str | None, name: str) -> int | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an ISO date or time", param_hint=name) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _progress() -> Callable[[int, int], None]:
    marks: dict[str, float] = {"next": PROGRESS_STEP}

    def show(done: int, total: int) -> None:
        if total >= 1000 and done / total >= marks["next"] - 1e-9:
            typer.echo(f"replayed {done}/{total} bars ({done / total:.0%})", err=True)
            marks["next"] += PROGRESS_STEP

    return show


@app.callback(invoke_without_command=True)
def backtest(  # noqa: PLR0917 - typer reads each option from a parameter
    data: Annotated[Path, typer.Option("--data", help="candles: CSV or ccxt OHLCV JSON")],
    symbol: Annotated[str, typer.Option("--symbol", help="the symbol, e.g. BTC/USDT")],
    out: Annotated[Path, typer.Option("--out", help="directory for the report files")],
    exchange: Annotated[str, typer.Option("--exchange", help="exchange label")] = "backtest",
    start: Annotated[str | None, typer.Option("--start", help="ISO start (UTC)")] = None,
    end: Annotated[str | None, typer.Option("--end", help="ISO end (UTC)")] = None,
    timeframe: Annotated[str, typer.Option("--timeframe", help="decision timeframe")] = "1h",
    fee: Annotated[float, typer.Option("--fee", help="fee rate per fill")] = 0.001,
    slippage_bps: Annotated[float, typer.Option("--slippage-bps", help="bps per fill")] = 5.0,
    cash: Annotated[float, typer.Option("--cash", help="starting cash (quote)")] = 10_000.0,
    news: Annotated[
        Path | None, typer.Option("--news", help="JSON list of news items (agents.types)")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="take trading.risk from this config")
    ] = None,
) -> None:
    """Replay the live agents' rules over the candles and write the report into --out."""
    from backtest.data import DataError, load
    from backtest.replay import Settings, replay
    from backtest.report import FILES, write

    try:
        candles = load(data)
    except DataError as exc:
        _fail(str(exc))
    settings = Settings(
        symbol=symbol,
        exchange=exchange,
        timeframe=timeframe,
        fee_rate=fee,
        slippage_bps=slippage_bps,
        cash=cash,
        start_ms=_ms(start, "--start"),
        end_ms=_ms(end, "--end"),
        limits=_limits(config),
    )
    items = _news(news)
    try:
        result = replay(candles, settings, news=items, progress=_progress())
    except ValueError as exc:
        _fail(f"{data}: {exc}")
    figures = write(result, out, news=len(items))
    typer.echo(
        f"{figures['bars']} bars, {figures['trades']} trades: total return "
        f"{figures['total_return']:+.2%} (buy and hold {figures['buy_and_hold_return']:+.2%}), "
        f"max drawdown {figures['max_drawdown']:.2%}"
    )
    typer.echo(f"wrote {', '.join(FILES)} to {out}")


def _limits(config: Path | None) -> RiskLimits:
    from core.config import RiskLimits
    from core.config_loader import load_config
    from core.errors import ConfigError

    if config is None:
        return RiskLimits()
    try:
        return load_config(config, env={}).trading.risk
    except ConfigError as exc:
        _fail(str(exc).splitlines()[0])


def _news(path: Path | None) -> list[NewsItem]:
    from pydantic import ValidationError

    from agents.types import NewsItem as Item

    if path is None:
        return []
    try:
        return [Item.model_validate(item) for item in json.loads(path.read_text())]
    except (OSError, ValueError, ValidationError) as exc:
        _fail(f"{path}: not a JSON list of news items ({str(exc).splitlines()[0]})")


def main() -> None:
    """Run the backtest command on its own (``python -m backtest.cli``)."""
    app(sys.argv[1:])


if __name__ == "__main__":
    main()
