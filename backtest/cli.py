"""``crypto-ai backtest``: replay the agents over a candle file and write the report."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from agents.types import Candle, NewsItem
    from backtest.replay import Settings
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
    symbol: Annotated[str, typer.Option("--symbol", help="the symbol, e.g. BTC/USDT")],
    out: Annotated[Path, typer.Option("--out", help="directory for the report files")],
    data: Annotated[
        Path | None, typer.Option("--data", help="candles: CSV or ccxt OHLCV JSON")
    ] = None,
    store: Annotated[
        Path | None, typer.Option("--store", help="a `history fetch` store (with --exchange)")
    ] = None,
    synthetic: Annotated[
        int | None, typer.Option("--synthetic", help="replay this many seeded synthetic bars")
    ] = None,
    walk_forward: Annotated[
        int, typer.Option("--walk-forward", help="also replay N out-of-sample windows")
    ] = 0,
    seeds: Annotated[int, typer.Option("--seeds", help="repeat with K seeds")] = 1,
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
    from backtest.replay import Settings, replay
    from backtest.report import FILES, write

    source = _Source(data, store, synthetic, exchange, symbol, timeframe)
    candles = source.candles(0)
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
    if walk_forward < 0 or seeds < 1:
        _fail("--walk-forward takes 0 or more windows and --seeds 1 or more")
    try:
        result = replay(candles, settings, news=items, progress=_progress())
        figures = write(result, out, news=len(items))
        extra = _variants(source, candles, settings, items, walk_forward, seeds)
    except ValueError as exc:
        _fail(f"{source.label}: {exc}")
    if extra:
        figures.update(extra)
        (out / "summary.json").write_text(json.dumps(figures, indent=2) + "\n")
    typer.echo(
        f"{figures['bars']} bars, {figures['trades']} trades: total return "
        f"{figures['total_return']:+.2%} (buy and hold {figures['buy_and_hold_return']:+.2%}), "
        f"max drawdown {figures['max_drawdown']:.2%}"
    )
    for k, window in enumerate(figures.get("windows", []), start=1):
        typer.echo(
            f"window {k} {window['start']} to {window['end']}: total return "
            f"{window['total_return']:+.2%} (buy and hold {window['buy_and_hold_return']:+.2%})"
        )
    if "seeds" in figures:
        spread = figures["seeds"]["spread"]["total_return"]
        typer.echo(
            f"{seeds} seeds: total return mean {spread['mean']:+.2%}, min {spread['min']:+.2%}, "
            f"max {spread['max']:+.2%} ({figures['seeds']['random']})"
        )
    typer.echo(f"wrote {', '.join(FILES)} to {out}")


class _Source:
    """Where the candles come from: a file, the store, or a seeded synthetic walk."""

    def __init__(  # noqa: PLR0917 - the command's source options, as given
        self,
        data: Path | None,
        store: Path | None,
        synthetic: int | None,
        exchange: str,
        symbol: str,
        timeframe: str,
    ) -> None:
        from backtest.history import store_path

        given = [x for x in (data, store, synthetic) if x is not None]
        if len(given) != 1:
            _fail("give exactly one of --data FILE, --store DIR or --synthetic BARS")
        self.synthetic = synthetic
        self.path = data
        if store is not None:
            self.path = store_path(store, exchange, symbol, timeframe)
        self.label = str(self.path) if self.path is not None else f"synthetic {synthetic} bars"

    def candles(self, seed: int) -> list[Candle]:
        """Return the candles; only the synthetic walk depends on the seed."""
        from backtest.data import DataError, load, synthetic

        if self.synthetic is not None:
            return synthetic(self.synthetic, seed=seed)
        assert self.path is not None
        try:
            return load(self.path)
        except DataError as exc:
            _fail(str(exc))


def _variants(  # noqa: PLR0917 - one run's whole description
    source: _Source,
    candles: list[Candle],
    settings: Settings,
    news: list[NewsItem],
    walk_forward: int,
    seeds: int,
) -> dict[str, Any]:
    """Return summary.json's ``windows``/``windows_spread`` and ``seeds`` parts."""
    from backtest.metrics import spread, summary
    from backtest.replay import replay
    from backtest.replay import walk_forward as split

    extra: dict[str, Any] = {}
    if walk_forward:
        parts = [
            _figures(summary(r, [])) for r in split(candles, settings, walk_forward, news=news)
        ]
        extra["windows"] = parts
        extra["windows_spread"] = spread(parts)
    if seeds > 1:
        runs = []
        for seed in range(seeds):
            result = replay(source.candles(seed), settings, news=news)
            runs.append({"seed": seed, **_figures(summary(result, []))})
        extra["seeds"] = {
            "random": (
                "the synthetic data: seed k generates walk k"
                if source.synthetic is not None
                else "nothing: the rules replay of a fixed file is deterministic, so every "
                "seed gives the same figures and the spread is 0"
            ),
            "runs": runs,
            "spread": spread([{k: v for k, v in r.items() if k != "seed"} for r in runs]),
        }
    return extra


def _figures(figures: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in figures.items() if k != "assumptions"}


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
