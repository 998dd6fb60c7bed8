"""The LLM records of a grid: one file per cell in one directory, and the grid's LLM totals.

Each cell of an ``--llm`` grid asks, records and replays through a record of its own,
``<records>/<SYMBOL with - for />_w<window>_s<seed>.jsonl`` (``_s<seed>.jsonl`` for a cell
over the whole span): cells that run at the same time on different workers never append
to the same file, and a rerun of the grid finds each cell's answers where the cell wrote
them. Like the candle store, the directory is read and written by path: every worker must
see it at the same path and be able to write it (one machine, or a shared volume mounted at
the same place). The command creates the directory; a cell never does, so a worker on a
host without it fails the cell, naming the directory, instead of asking the LLM again into
a file nobody else reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from backtest.llm_record import RecordError

#: What a worker needs of the record directory (the end of every error about it).
EVERY_WORKER = (
    "every worker needs the LLM record directory at the same path, writable (one machine, "
    "or a shared volume mounted at the same place)"
)

#: The whole-number counts of a cell's ``llm`` block that the grid adds up.
COUNTS = (
    "requests", "failed", "unmetered", "recorded", "replayed", "fallbacks", "prompt_tokens",
    "completion_tokens", "tokens", "replayed_prompt_tokens", "replayed_completion_tokens",
    "replayed_tokens",
)  # fmt: skip
#: The costs a grid adds up (None when no cell has one: no price configured).
COSTS = ("cost", "replayed_cost")


def record_file(records: Path, symbol: str, window: int | None, seed: int) -> Path:
    """Return a cell's record in the directory ``records``: ``BTC-USDT_w2_s1.jsonl``."""
    where = "" if window is None else f"_w{window}"
    return records / f"{symbol.replace('/', '-')}{where}_s{seed}.jsonl"


def check_record(path: Path) -> None:
    """Raise RecordError unless the record's directory exists here and the record can be
    appended to (an empty file is created if there is none)."""
    if not path.parent.is_dir():
        raise RecordError(f"{path.parent}: no such LLM record directory here: {EVERY_WORKER}")
    try:
        with path.open("a", encoding="utf-8"):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise RecordError(
            f"{path}: cannot write this LLM record ({reason}): {EVERY_WORKER}"
        ) from None


def totals(usages: Iterable[Mapping[str, Any]], records: Path) -> dict[str, Any]:
    """Return the grid's ``llm`` block: every count and cost added up over the cells' blocks.

    ``cells`` says how many cells are counted: a failed cell returns no figures, so what it
    asked before it failed is not in the totals (its answers are in its record).
    """
    found = list(usages)
    out: dict[str, Any] = {"records": str(records), "cells": len(found)}
    out.update({name: sum(int(u.get(name) or 0) for u in found) for name in COUNTS})
    for name in COSTS:
        costs = [float(u[name]) for u in found if u.get(name) is not None]
        out[name] = sum(costs) if costs else None
    out["models"] = sorted({str(u["model"]) for u in found if u.get("model")})
    return out
