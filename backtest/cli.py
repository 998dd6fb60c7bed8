"""``crypto-ai backtest``: replay the agents over candles and write the report; or run a grid
of symbols x walk-forward windows x seeds, in this process or on the Celery fleet.

This package imports no Celery (pyproject's import contract): ``--fleet`` runs through the
:class:`~backtest.grid.FleetRunner` the ``crypto-ai`` command hands to :func:`make_app`
(``workers/grid.py``); ``python -m backtest.cli`` has none and says so. With ``--llm``, a
single run keeps one record file; a grid keeps a directory of them, one per cell
(``backtest/grid_records.py``), which the command creates before any cell runs.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from agents.types import Candle, NewsItem
    from backtest.grid import Cell, FleetRunner, Outcome
    from backtest.llm_replay import Connect
    from backtest.replay import Settings, Strategy
    from core.config import RiskLimits

#: A progress line every this share of the bars.
PROGRESS_STEP = 0.1

#: Seconds a ``--fleet`` grid waits for its cells by default.
FLEET_TIMEOUT = 1800.0
#: The record of LLM answers in --out when --llm is given without --llm-record.
LLM_RECORD = "llm_record.jsonl"
#: A grid's directory of records (one per cell) in --out, when --llm-record is not given.
LLM_RECORDS = "llm_records"


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


@dataclass(frozen=True)
class Options:
    """The command's options, as given."""

    symbol: str | None
    symbols: str | None
    out: Path
    data: Path | None
    store: Path | None
    synthetic: int | None
    walk_forward: int
    seeds: int
    exchange: str
    start: str | None
    end: str | None
    timeframe: str
    fee: float
    slippage_bps: float
    cash: float
    news: Path | None
    config: Path | None
    fleet: bool
    timeout: float
    llm: bool = False
    llm_record: Path | None = None

    @property
    def grid(self) -> bool:
        """Return whether this is a grid (``--symbols`` or ``--fleet``), not one replay."""
        return self.symbols is not None or self.fleet

    @property
    def record(self) -> Path | None:
        """Return the record of LLM answers (None: no --llm): --llm-record, or in --out;
        for a grid, the directory of its cells' records."""
        if self.llm_record is not None:
            return self.llm_record
        if not self.llm:
            return None
        return self.out / (LLM_RECORDS if self.grid else LLM_RECORD)


def make_app(fleet: FleetRunner | None = None, connect: Connect | None = None) -> typer.Typer:
    """Return the ``backtest`` command; ``fleet`` runs ``--fleet`` grids on the Celery fleet,
    ``connect`` builds the LLM ``--llm`` asks (``workers/cli.py`` hands both)."""
    app = typer.Typer(help="Replay the agents over recorded candles (docs/BACKTEST.md).")

    @app.callback(invoke_without_command=True)
    def backtest(  # noqa: PLR0917 - typer reads each option from a parameter
        out: Annotated[Path, typer.Option("--out", help="directory for the report files")],
        symbol: Annotated[
            str | None, typer.Option("--symbol", help="the symbol, e.g. BTC/USDT")
        ] = None,
        symbols: Annotated[
            str | None, typer.Option("--symbols", help="a grid over symbols: S1,S2,...")
        ] = None,
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
            Path | None,
            typer.Option(
                "--config", "-c", help="take trading.risk from it (with --fleet: the fleet's too)"
            ),
        ] = None,
        on_fleet: Annotated[
            bool, typer.Option("--fleet", help="run the grid's cells as Celery tasks")
        ] = False,
        timeout: Annotated[
            float, typer.Option("--timeout", help="seconds a --fleet grid waits")
        ] = FLEET_TIMEOUT,
        llm: Annotated[
            bool,
            typer.Option("--llm", help="the live ladder, LLM first (the config's llm), recorded"),
        ] = False,
        llm_record: Annotated[
            Path | None,
            typer.Option(
                "--llm-record",
                help=(
                    f"LLM answers to replay and add to (default: OUT/{LLM_RECORD}; a grid: a "
                    f"directory, one file per cell, default OUT/{LLM_RECORDS}); implies --llm"
                ),
            ),
        ] = None,
    ) -> None:
        """Replay the live agents' rules over the candles and write the report into --out."""
        options = Options(
            symbol, symbols, out, data, store, synthetic, walk_forward, seeds, exchange, start,
            end, timeframe, fee, slippage_bps, cash, news, config, on_fleet, timeout, llm,
            llm_record,
        )  # fmt: skip
        run(options, fleet, connect)

    return app


def run(opts: Options, fleet: FleetRunner | None, connect: Connect | None = None) -> None:
    """Run the command: one replay (``--symbol``) or a grid (``--symbols`` or ``--fleet``)."""
    from backtest.replay import Settings

    names = _symbols(opts)
    source = _Source(opts, names)
    if opts.walk_forward < 0 or opts.seeds < 1:
        _fail("--walk-forward takes 0 or more windows and --seeds 1 or more")
    settings = Settings(
        symbol=names[0],
        exchange=opts.exchange,
        timeframe=opts.timeframe,
        fee_rate=opts.fee,
        slippage_bps=opts.slippage_bps,
        cash=opts.cash,
        start_ms=_ms(opts.start, "--start"),
        end_ms=_ms(opts.end, "--end"),
        limits=_limits(opts.config),
    )
    if opts.grid:
        _grid(opts, source, settings, names, fleet, connect)
    else:
        _single(opts, source, settings, connect)


def _symbols(opts: Options) -> list[str]:
    if (opts.symbol is None) == (opts.symbols is None):
        _fail("give --symbol S (one replay) or --symbols S1,S2 (a grid)")
    if opts.symbol is not None:
        return [opts.symbol]
    assert opts.symbols is not None
    names = list(dict.fromkeys(s.strip() for s in opts.symbols.split(",") if s.strip()))
    if not names:
        _fail("--symbols names no symbol")
    return names


class _Source:
    """Where the candles come from: a file, the store, or a seeded synthetic walk."""

    def __init__(self, opts: Options, symbols: list[str]) -> None:
        from backtest.history import store_path

        given = [x for x in (opts.data, opts.store, opts.synthetic) if x is not None]
        if len(given) != 1:
            _fail("give exactly one of --data FILE, --store DIR or --synthetic BARS")
        if opts.data is not None and len(symbols) > 1:
            _fail("--data holds one symbol's candles: use --store DIR for several symbols")
        self.synthetic = opts.synthetic
        self.paths: dict[str, Path] | None = None
        if opts.data is not None:
            self.paths = {symbols[0]: opts.data}
        elif opts.store is not None:
            store = opts.store
            self.paths = {s: store_path(store, opts.exchange, s, opts.timeframe) for s in symbols}
        first = None if self.paths is None else self.paths[symbols[0]]
        self.path = first
        self.label = str(first) if first is not None else f"synthetic {opts.synthetic} bars"

    def candles(self, seed: int) -> list[Candle]:
        """Return the first symbol's candles; only the synthetic walk depends on the seed."""
        from backtest.data import DataError, load, synthetic

        if self.synthetic is not None:
            return synthetic(self.synthetic, seed=seed)
        assert self.path is not None
        try:
            return load(self.path)
        except DataError as exc:
            _fail(str(exc))


def _single(opts: Options, source: _Source, settings: Settings, connect: Connect | None) -> None:
    from backtest.metrics import summary
    from backtest.replay import replay
    from backtest.report import FILES, write
    from backtest.variants import variants

    if opts.record is not None:
        _directory(opts.record.parent, "--llm-record")
    candles = source.candles(0)
    items = _news(opts.news)
    with _strategy(opts, connect) as strategy:
        try:
            result = replay(candles, settings, news=items, strategy=strategy, progress=_progress())
        except ValueError as exc:
            _fail(f"{source.label}: {exc}")
    try:
        main = {k: v for k, v in summary(result, []).items() if k != "assumptions"}
        extra = variants(
            settings, main, windows=opts.walk_forward, seeds=opts.seeds, files=source.paths,
            synthetic=source.synthetic, news=opts.news, progress=_Lines(),
            llm_record=opts.record, llm_config=opts.config, connect=connect,
        )  # fmt: skip
    except ValueError as exc:
        _fail(f"{source.label}: {exc}")
    figures = write(result, opts.out, news=len(items), extra=extra)
    _say_single(figures, opts.seeds)
    _say_llm(figures.get("llm"))
    typer.echo(f"wrote {', '.join(FILES)} to {opts.out}")


@contextlib.contextmanager
def _strategy(opts: Options, connect: Connect | None) -> Iterator[Strategy]:
    """Yield the run's strategy: the rules, or the LLM ladder over the record (sampling 0)."""
    from backtest.llm_replay import RecordError, llm_strategy
    from backtest.replay import rules
    from core.errors import ConfigError

    if opts.record is None:
        yield rules
        return
    try:
        strategy = llm_strategy(opts.record, config=opts.config, connect=connect)
    except ConfigError as exc:
        _fail(str(exc).splitlines()[0])
    except (RecordError, ValueError) as exc:
        _fail(str(exc))
    with strategy:
        yield strategy


def _say_llm(usage: dict[str, Any] | None) -> None:
    if usage is None:
        return
    cost = "no price configured" if usage["cost"] is None else f"cost {usage['cost']:.4f}"
    where = (
        f"record {usage['record']}"
        if "record" in usage
        else f"records in {usage['records']} (one per cell)"
    )
    typer.echo(
        f"llm: {usage['requests']} requests, {usage['recorded']} answers recorded, "
        f"{usage['replayed']} replayed at no cost; {usage['tokens']:,} tokens ({cost}); {where}"
    )


def _directory(path: Path, option: str, note: str = "") -> None:
    """Create ``path`` (and its parents) or stop with one line saying why it cannot be."""
    if path.exists() and not path.is_dir():
        _fail(f"{option}: {path} is a file, not a directory{note}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _fail(f"{option}: cannot create {path}: {exc.strerror or exc}")


def _news(path: Path | None) -> list[NewsItem]:
    from backtest.grid import load_news

    return [] if path is None else _or_fail(lambda: load_news(path))


def _or_fail(load: Callable[[], Any]) -> Any:
    try:
        return load()
    except ValueError as exc:
        _fail(str(exc))


def _say_single(figures: dict[str, Any], seeds: int) -> None:
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
        typer.echo(f"{seeds} seeds: {_spread_text(figures['seeds']['spread'])} "
                   f"({figures['seeds']['random']})")  # fmt: skip
        for window in figures["seeds"].get("windows", []):
            typer.echo(f"window {window['window']} over {seeds} seeds: "
                       f"{_spread_text(window['spread'])}")  # fmt: skip


def _spread_text(spread: dict[str, dict[str, float]] | None) -> str:
    if not spread:
        return "no figures"
    r = spread["total_return"]
    return f"total return mean {r['mean']:+.2%}, min {r['min']:+.2%}, max {r['max']:+.2%}"


class _Lines:
    """The grid's progress on stderr: a line per cell ended, a line while nothing ends."""

    def done(self, outcome: Outcome, finished: int, total: int) -> None:
        """Say one more cell ended (its figures, or its error)."""
        f, name = outcome.figures, outcome.cell.name
        if f is None:
            typer.echo(f"[{finished}/{total}] {name}: {outcome.error}", err=True)
            return
        typer.echo(
            f"[{finished}/{total}] {name}: total return {f['total_return']:+.2%} "
            f"(buy and hold {f['buy_and_hold_return']:+.2%})",
            err=True,
        )

    def waiting(self, left: int, total: int) -> None:
        """Say how many cells are still out."""
        typer.echo(f"waiting for {left} of {total} cells (queued or running)", err=True)


def _grid(  # noqa: PLR0917 - one grid run's whole description
    opts: Options,
    source: _Source,
    settings: Settings,
    names: list[str],
    fleet: FleetRunner | None,
    connect: Connect | None = None,
) -> None:
    from backtest.grid import HERE, gather, plan, random_note, run_here
    from backtest.report import GRID_FILES, assumptions_for, write_grid

    if opts.fleet and fleet is None:
        _fail("--fleet runs from the crypto-ai command (it holds the fleet's Celery app)")
    items = _news(opts.news)
    if opts.record is not None:
        _directory(opts.record, "--llm-record", ": a grid keeps one record per cell in it")
    where: dict[str, Any] = {"files": source.paths, "synthetic": source.synthetic}
    where.update(llm_records=opts.record, llm_config=opts.config)
    cells = _or_fail(
        lambda: plan(
            names, windows=opts.walk_forward, seeds=opts.seeds, settings=settings,
            news=opts.news, **where,
        )
    )  # fmt: skip
    windows = f"{opts.walk_forward} windows" if opts.walk_forward else "the whole span"
    ran = "the fleet" if opts.fleet else HERE
    typer.echo(
        f"grid: {len(cells)} cells ({len(names)} symbols x {windows} x {opts.seeds} seeds) "
        f"on {ran}",
        err=True,
    )
    outcomes = _run_cells(opts, cells, fleet) if opts.fleet else run_here(cells, _Lines(), connect)
    llm = None
    if opts.record is not None:
        # the assumption's words: where each cell's answers are and which sampling it replays
        llm = {"record": f"{opts.record}/<symbol>_w<window>_s<seed>.jsonl (one per cell)"}
        llm["sampling"] = "the cell's seed"
    gathered = gather(
        outcomes,
        ran=ran,
        random=random_note(source.synthetic is not None, llm=opts.record is not None),
        assumptions=assumptions_for(settings, news=len(items), llm=llm),
    )
    write_grid(gathered, opts.out)
    for symbol, block in gathered["symbols"].items():
        typer.echo(f"{symbol}: {block['cells']} cells, {_spread_text(block['spread'])}")
    _say_llm(gathered.get("llm"))
    typer.echo(f"wrote {', '.join(GRID_FILES)} to {opts.out}")
    if gathered["failed"]:
        typer.echo(f"{len(gathered['failed'])} of {len(cells)} cells failed:", err=True)
        for failed in gathered["failed"]:
            typer.echo(f"  {failed['cell']}: {failed['error']}", err=True)
        raise typer.Exit(1)


def _run_cells(opts: Options, cells: list[Cell], fleet: FleetRunner | None) -> list[Outcome]:
    from core.errors import ConfigError

    assert fleet is not None
    try:
        return fleet(cells, config=opts.config, timeout=opts.timeout, progress=_Lines())
    except ConfigError as exc:
        typer.echo(exc.render(), err=True)
        raise typer.Exit(2) from None
    except Exception as exc:  # the broker or the backend: one line, not a traceback
        line = " ".join(str(exc).split())
        typer.echo(
            f"error: the grid could not run on the fleet: {type(exc).__name__}: {line}", err=True
        )
        raise typer.Exit(1) from None


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


#: ``backtest`` without the fleet (``python -m backtest.cli``; tests).
app = make_app()


def main() -> None:
    """Run the backtest command on its own (``python -m backtest.cli``)."""
    app(sys.argv[1:])


if __name__ == "__main__":
    main()
