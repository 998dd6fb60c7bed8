"""The walk-forward grid: symbols x windows x seeds, one replay per cell, one gathered summary.

A cell is small JSON (:class:`Cell`): its symbol, window and seed, where its candles are (a
file with the SHA-256 the planner saw, or the number of bars of a seeded synthetic walk),
the settings and the news file. It loads its candles itself, so a cell runs the same in
this process (:func:`run_here`) or as a ``backtest.cell`` task on a Celery worker
(``tasks/backtest.py``), and gives the same figures there: the replay is deterministic and
the figures travel as JSON, whose floats come back exactly. A worker whose file is not the
one planned (another host's store, a file rewritten since) fails the cell, naming the file,
instead of replaying other candles.

A window cell replays what :func:`backtest.replay.walk_forward` replays for that window
(the candles up to the window's end, the span cut to the window); a cell without a window
replays the whole span. A cell that fails is an :class:`Outcome` with its one-line error:
:func:`gather` lists it by name and leaves it out of every spread, never drops it.

With ``--llm`` each cell of a grid has a record of its own in one directory
(``backtest/grid_records.py``), replays (or asks and records) sampling ``seed`` of every
answer, and returns its ``llm`` usage; :func:`gather` adds them up. The LLM it asks is the
one its process holds: in this process the one ``connect`` builds from the cell's config,
on a fleet worker the worker's own (:class:`~backtest.llm_replay.HostLLM`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from agents.types import Candle, NewsItem
from backtest import data as data_lib
from backtest.data import DataError
from backtest.grid_records import check_record, record_file, totals
from backtest.llm_replay import Connect, HostLLM, llm_strategy
from backtest.metrics import spread, summary
from backtest.replay import Result, Settings, Strategy, base_step, replay, rules, windows
from core.config import RiskLimits

#: The keys of a cell's figures that name it rather than measure it.
IDENTITY = ("cell", "window", "seed", "ran_on")

#: Where a cell that ran in the calling process says it ran.
HERE = "this process"


@dataclass(frozen=True)
class Cell:
    """One replay of the grid, as the small JSON a task carries (:meth:`to_json`)."""

    symbol: str
    seed: int
    #: 1 to ``windows``; None: the whole span.
    window: int | None
    windows: int
    settings: dict[str, Any]
    data: str | None = None
    digest: str | None = None
    #: Bars of the seeded synthetic walk (instead of ``data``), and which walk.
    synthetic: int | None = None
    walk: int = 0
    news: str | None = None
    news_digest: str | None = None
    #: The cell's record of LLM answers (``backtest.llm_record``; in a grid, its own file)
    #: and the config naming the LLM in this process (a fleet worker asks its own LLM);
    #: no record: the rules replay. A cell replays (or asks) sampling ``seed`` of each answer.
    llm_record: str | None = None
    llm_config: str | None = None

    @property
    def name(self) -> str:
        """Return the cell's name as reports print it: ``BTC/USDT window 2/3 seed 1``."""
        if self.window is None:
            return f"{self.symbol} seed {self.seed}"
        return f"{self.symbol} window {self.window}/{self.windows} seed {self.seed}"

    def to_json(self) -> dict[str, Any]:
        """Return the cell as JSON-ready data."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Cell:
        """Return the cell :meth:`to_json` gave."""
        return cls(**value)


@dataclass(frozen=True)
class Outcome:
    """How one cell ended: its figures, or the line saying why it has none."""

    cell: Cell
    figures: dict[str, Any] | None = None
    error: str | None = None
    ran_on: str = HERE


class Progress(Protocol):
    """What a grid run tells its user while it goes."""

    def done(self, outcome: Outcome, finished: int, total: int) -> None:
        """One more cell ended (``finished`` of ``total`` now)."""

    def waiting(self, left: int, total: int) -> None:
        """Nothing ended for a while; ``left`` cells are still queued or running."""


class FleetRunner(Protocol):
    """Runs cells on the Celery fleet (``workers/grid.py``); ``crypto-ai`` provides it."""

    def __call__(
        self, cells: Sequence[Cell], *, config: Path | None, timeout: float, progress: Progress
    ) -> list[Outcome]:
        """Return every cell's outcome, in the order given, within ``timeout`` seconds."""


def digest(path: Path) -> str:
    """Return the SHA-256 of a file's bytes, in hex."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def settings_json(settings: Settings) -> dict[str, Any]:
    """Return the replay settings a cell carries (the symbol is the cell's own)."""
    values = dataclasses.asdict(settings)
    values.pop("symbol")
    values["limits"] = settings.limits.model_dump(mode="json")
    return values


def settings_of(cell: Cell) -> Settings:
    """Return the replay settings of a cell."""
    values = dict(cell.settings)
    limits = RiskLimits.model_validate(values.pop("limits"))
    return Settings(symbol=cell.symbol, limits=limits, **values)


def plan(
    symbols: Sequence[str],
    *,
    windows: int,
    seeds: int,
    settings: Settings,
    files: Mapping[str, Path] | None = None,
    synthetic: int | None = None,
    news: Path | None = None,
    llm_record: Path | None = None,
    llm_records: Path | None = None,
    llm_config: Path | None = None,
) -> list[Cell]:
    """Return the grid's cells: per symbol, per seed, per window (or the whole span).

    ``files`` gives each symbol's candle file; ``synthetic`` instead replays seeded walks,
    the walk of seed k of the i-th symbol being ``i * seeds + k`` (one symbol: walk k).
    With an LLM, ``llm_record`` is one record every cell shares (a single run's windows and
    seeds, run one after the other) or ``llm_records`` a directory holding one record per
    cell (:func:`~backtest.grid_records.record_file`).
    """
    if (files is None) == (synthetic is None):
        raise ValueError("a grid takes candle files or synthetic bars, not both or neither")
    if llm_record is not None and llm_records is not None:
        raise ValueError("a grid's cells share one LLM record or have one each, not both")
    if windows < 0 or seeds < 1:
        raise ValueError("--walk-forward takes 0 or more windows and --seeds 1 or more")
    news_at = str(news.resolve()) if news is not None else None
    news_sha = digest(news) if news is not None else None
    out = []
    for i, symbol in enumerate(symbols):
        path = files[symbol].resolve() if files is not None else None
        first = Cell(
            symbol, 0, None, windows, settings_json(settings),
            data=None if path is None else str(path),
            digest=None if path is None else digest(path),
            synthetic=synthetic, news=news_at, news_digest=news_sha,
            llm_record=None if llm_record is None else str(llm_record.resolve()),
            llm_config=None if llm_config is None else str(llm_config.resolve()),
        )  # fmt: skip
        for seed in range(seeds):
            for window in range(1, windows + 1) if windows else [None]:
                walk = i * seeds + seed
                own = None
                if llm_records is not None:
                    own = str(record_file(llm_records.resolve(), symbol, window, seed))
                cell = dataclasses.replace(first, seed=seed, window=window, walk=walk)
                out.append(cell if own is None else dataclasses.replace(cell, llm_record=own))
    if llm_records is not None:
        _distinct_records(out)
    return out


def _distinct_records(cells: Sequence[Cell]) -> None:
    """Raise ValueError if two cells would append to one record (``A/B`` and ``A-B``)."""
    seen: dict[str | None, str] = {}
    for cell in cells:
        other = seen.setdefault(cell.llm_record, cell.name)
        if other != cell.name:
            raise ValueError(
                f"{other} and {cell.name} would share the LLM record {cell.llm_record}"
            )


def random_note(synthetic: bool, *, llm: bool = False) -> str:
    """Return what the seeds change, in words (summary.json's ``random``)."""
    if llm:
        sampled = (
            "the LLM's samplings: seed k replays (or asks and records) sampling k of each answer"
        )
        return sampled + ("; and the synthetic data: seed k replays walk k" if synthetic else "")
    if synthetic:
        return (
            "the synthetic data: seed k of the i-th symbol (from 0) replays walk "
            "i * seeds + k (one symbol: walk k)"
        )
    return (
        "nothing: the rules replay of a fixed file is deterministic, so every seed gives "
        "the same figures and the spread is 0"
    )


# a worker runs many cells of one symbol in a row: parse its file once; two files at most,
# as a year of minute candles is hundreds of megabytes of Candle objects
@functools.lru_cache(maxsize=2)
def _file_candles(path: str, sha: str) -> tuple[Candle, ...]:
    found = digest(Path(path))
    if found != sha:
        raise DataError(
            f"{path}: differs from the file the grid was planned with (sha256 {found[:12]}, "
            f"planned {sha[:12]}): every worker needs the same file at the same path"
        )
    return tuple(data_lib.load(Path(path)))


@functools.lru_cache(maxsize=2)
def _news_items(path: str, sha: str) -> tuple[NewsItem, ...]:
    if digest(Path(path)) != sha:
        raise DataError(f"{path}: differs from the news file the grid was planned with")
    return tuple(load_news(Path(path)))


def load_news(path: Path) -> list[NewsItem]:
    """Return the news items of a JSON list (``agents.types.NewsItem``); ValueError if not."""
    try:
        return [NewsItem.model_validate(item) for item in json.loads(path.read_text())]
    except (OSError, ValueError, ValidationError) as exc:
        line = str(exc).splitlines()[0]
        raise DataError(f"{path}: not a JSON list of news items ({line})") from None


def candles_of(cell: Cell) -> Sequence[Candle]:
    """Return the cell's candles: its file (checked against the digest) or its walk."""
    if cell.synthetic is not None:
        return data_lib.synthetic(cell.synthetic, seed=cell.walk)
    if cell.data is None or cell.digest is None:
        raise DataError(f"{cell.name}: the cell names no candles")
    return _file_candles(cell.data, cell.digest)


def window_replay(
    candles: Sequence[Candle],
    settings: Settings,
    count: int,
    window: int,
    *,
    news: Sequence[NewsItem] = (),
    strategy: Strategy = rules,
) -> Result:
    """Return the replay of window ``window`` (from 1) of ``count``, as walk_forward does it."""
    base_ms = base_step(candles)
    start_ms, end_ms = windows(candles, settings, count)[window - 1]
    known = [c for c in candles if c.time + base_ms <= end_ms]
    part = dataclasses.replace(settings, start_ms=start_ms, end_ms=end_ms)
    return replay(known, part, news=news, strategy=strategy)


@contextlib.contextmanager
def strategy_of(
    cell: Cell, connect: Connect | None = None, host: HostLLM | None = None
) -> Iterator[Strategy]:
    """Yield the cell's strategy: the rules, or the LLM ladder over its record (sampling
    ``seed``), asking ``host``'s LLM when given, else the one ``connect`` builds from the
    cell's config. RecordError if the record's directory is not here or not writable."""
    if cell.llm_record is None:
        yield rules
        return
    config = None if cell.llm_config is None else Path(cell.llm_config)
    record = Path(cell.llm_record)
    check_record(record)
    with llm_strategy(
        record, config=config, sampling=cell.seed, connect=connect, host=host
    ) as strategy:
        yield strategy


def run_cell(
    cell: Cell, connect: Connect | None = None, host: HostLLM | None = None
) -> dict[str, Any]:
    """Return the cell's name, window, seed and figures (summary.json's, no assumptions);
    with an LLM record, its ``llm`` usage too (``host``, ``connect``: :func:`strategy_of`)."""
    candles = candles_of(cell)
    settings = settings_of(cell)
    news: Sequence[NewsItem] = ()
    if cell.news is not None and cell.news_digest is not None:
        news = _news_items(cell.news, cell.news_digest)
    with strategy_of(cell, connect, host) as strategy:
        if cell.window is None:
            result = replay(candles, settings, news=news, strategy=strategy)
        else:
            result = window_replay(
                candles, settings, cell.windows, cell.window, news=news, strategy=strategy
            )
    figures = {k: v for k, v in summary(result, []).items() if k != "assumptions"}
    if result.llm_usage is not None:
        figures["llm"] = result.llm_usage
    return {"cell": cell.name, "window": cell.window, "seed": cell.seed, **figures}


def failure_line(exc: BaseException) -> str:
    """Return a failed cell's error as one line: ``failed: DataError: ...``."""
    return f"failed: {type(exc).__name__}: {' '.join(str(exc).split())}"


def run_here(
    cells: Sequence[Cell], progress: Progress, connect: Connect | None = None
) -> list[Outcome]:
    """Run every cell in this process, in order; a cell's bad data fails that cell only."""
    outcomes = []
    for n, cell in enumerate(cells, start=1):
        try:
            outcome = Outcome(cell, figures=run_cell(cell, connect))
        except (ValueError, OSError) as exc:  # bad data or too few bars: this cell's failure
            outcome = Outcome(cell, error=failure_line(exc))
        outcomes.append(outcome)
        progress.done(outcome, n, len(cells))
    return outcomes


def measured(figures: Mapping[str, Any]) -> dict[str, Any]:
    """Return a cell's figures without the keys that name it."""
    return {k: v for k, v in figures.items() if k not in IDENTITY}


def _spread(outcomes: Sequence[Outcome]) -> dict[str, dict[str, float]] | None:
    runs = [measured(o.figures) for o in outcomes if o.figures is not None]
    return spread(runs) if runs else None


def _span(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    for o in outcomes:
        if o.figures is not None:
            return {"start": o.figures["start"], "end": o.figures["end"]}
    return {"start": None, "end": None}


def _per_symbol(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    ran = [o for o in outcomes if o.figures is not None]
    block: dict[str, Any] = {
        "cells": len(ran),
        "failed": len(outcomes) - len(ran),
        "spread": _spread(outcomes),
    }
    count = outcomes[0].cell.windows
    if count:
        seeds = sorted({o.cell.seed for o in outcomes})
        block["windows"] = [
            {"window": k, **_span(part), "seeds_spread": _spread(part)}
            for k in range(1, count + 1)
            for part in [[o for o in outcomes if o.cell.window == k]]
        ]
        block["seeds"] = [
            {"seed": s, "windows_spread": _spread([o for o in outcomes if o.cell.seed == s])}
            for s in seeds
        ]
    return block


def entry(outcome: Outcome) -> dict[str, Any]:
    """Return a cell's line of summary.json's ``cells``: its name, where it ran, its figures."""
    c = outcome.cell
    head = {"cell": c.name, "symbol": c.symbol, "window": c.window, "seed": c.seed}
    head["ran_on"] = outcome.ran_on
    if outcome.figures is None:
        return {**head, "error": outcome.error}
    return {**head, **measured(outcome.figures)}


def gather(
    outcomes: Sequence[Outcome], *, ran: str, random: str, assumptions: list[str]
) -> dict[str, Any]:
    """Return the grid's summary: every cell, per symbol, the spreads, the failed cells;
    with an LLM, ``llm``: the cells' usage added up (:func:`~backtest.grid_records.totals`)."""
    symbols = list(dict.fromkeys(o.cell.symbol for o in outcomes))
    failed = [{"cell": o.cell.name, "error": o.error} for o in outcomes if o.figures is None]
    gathered: dict[str, Any] = {
        "grid": {
            "symbols": symbols,
            "walk_forward": outcomes[0].cell.windows if outcomes else 0,
            "seeds": len({o.cell.seed for o in outcomes}),
            "cells": len(outcomes),
            "failed": len(failed),
            "ran": ran,
            "random": random,
        },
        "spread": _spread(outcomes),
        "symbols": {s: _per_symbol([o for o in outcomes if o.cell.symbol == s]) for s in symbols},
        "cells": [entry(o) for o in outcomes],
        "failed": failed,
    }
    records = [Path(o.cell.llm_record) for o in outcomes if o.cell.llm_record is not None]
    if records:
        usages = [o.figures["llm"] for o in outcomes if o.figures and "llm" in o.figures]
        gathered["llm"] = totals(usages, records[0].parent)
    gathered["assumptions"] = assumptions
    return gathered
