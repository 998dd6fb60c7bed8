"""A single run's walk-forward windows and seeds (``summary.json``'s ``windows``,
``windows_spread`` and ``seeds``), each replayed as a grid cell in this process.

Every window and seed besides seed 0's whole span is a :class:`~backtest.grid.Cell` run by
:func:`~backtest.grid.run_cell`, so a single run and a grid give the same figures; the
cells share the run's one LLM record (they run one after the other).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from backtest.grid import Outcome, Progress, measured, plan, random_note, run_cell
from backtest.llm_replay import Connect
from backtest.metrics import spread
from backtest.replay import Settings


def variants(
    settings: Settings,
    main: dict[str, Any],
    *,
    windows: int,
    seeds: int,
    progress: Progress,
    files: Mapping[str, Path] | None = None,
    synthetic: int | None = None,
    news: Path | None = None,
    llm_record: Path | None = None,
    llm_config: Path | None = None,
    connect: Connect | None = None,
) -> dict[str, Any]:
    """Return a single run's ``windows``/``windows_spread`` and ``seeds`` blocks.

    ``main`` is the figures of seed 0's whole span (the replay made already). Every other
    window and seed is a cell run here, so a single run and a grid give the same figures.
    """
    where: dict[str, Any] = {"files": files, "synthetic": synthetic, "news": news}
    where.update(llm_record=llm_record, llm_config=llm_config)
    todo = plan([settings.symbol], windows=windows, seeds=seeds, settings=settings, **where)
    if not windows:
        todo = todo[1:]  # seed 0's whole span is ``main``
    elif seeds > 1:
        todo += plan([settings.symbol], windows=0, seeds=seeds, settings=settings, **where)[1:]
    found: dict[tuple[int, int | None], dict[str, Any]] = {(0, None): main}
    for n, cell in enumerate(todo, start=1):
        found[cell.seed, cell.window] = measured(run_cell(cell, connect))
        progress.done(Outcome(cell, figures=found[cell.seed, cell.window]), n, len(todo))
    per_seed = [[found[s, k] for k in range(1, windows + 1)] for s in range(seeds)]
    extra: dict[str, Any] = {}
    if windows:
        extra["windows"] = per_seed[0]
        extra["windows_spread"] = spread(per_seed[0])
    if seeds > 1:
        runs = [{"seed": s, **found[s, None]} for s in range(seeds)]
        for s, run in enumerate(runs):
            if windows:
                run["windows"], run["windows_spread"] = per_seed[s], spread(per_seed[s])
        extra["seeds"] = {
            "random": random_note(synthetic is not None, llm=llm_record is not None),
            "runs": runs,
            "spread": spread([found[s, None] for s in range(seeds)]),
        }
        if windows:
            extra["seeds"]["windows"] = [
                {"window": k, "start": first["start"], "end": first["end"],
                 "spread": spread([per_seed[s][k - 1] for s in range(seeds)])}
                for k, first in enumerate(per_seed[0], start=1)
            ]  # fmt: skip
    return extra
