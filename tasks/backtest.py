"""The grid's cells as Celery work: ``backtest.cell`` replays one cell on a worker, and
:func:`run_grid` sends a grid's cells as one group and gathers their outcomes.

A cell is small JSON (``backtest/grid.py``): a worker loads the cell's candles itself, from
the file at the path the planner saw (checked by its SHA-256) or from the seeded synthetic
walk, so no candle travels in a message. Cells go to ``low`` (``tasks/routing.py``): a grid
never delays execution, analysts or strategy. A rules cell is pure (a replay of files),
so a redelivery under ``acks_late`` computes the same figures again.

An ``--llm`` cell asks the worker's own LLM (``tasks.context``: the adapter behind the
fleet's Redis-shared LLM limiter and daily budget, on the worker's event loop), never one
of its own, and appends to its own record file in the grid's record directory, which must
be at the same path on every worker; a redelivered cell replays what it recorded before and
asks only the rest.

Why a group polled from the caller, not a chord: a chord's body runs once every cell has
succeeded; with one failed cell Celery hands the body a ChordError only after all the other
cells finished, and names no cell. Polling the cells' results (one MGET per interval, the
result backend's ``get_many``) reports each cell as it ends, a failed one at once and by
name; at the timeout the cells still out are reported as such and revoked (the workers up
then drop them; one started later does not know of the revoke, and its result is ignored).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

from celery import Task, group, shared_task, states
from celery.exceptions import TimeoutError as ResultTimeoutError

from backtest.grid import Cell, Outcome, Progress, failure_line, run_cell
from backtest.llm_replay import HostLLM
from tasks import context
from tasks.runs import release

#: How often the caller reads the cells' results.
POLL_SECONDS = 0.25
#: Seconds without a cell ending before the caller says what it still waits for.
QUIET_SECONDS = 30.0


@shared_task(name="backtest.cell", bind=True, throws=(ValueError, OSError))
def cell(self: Task, cell: dict[str, Any]) -> dict[str, Any]:
    """Replay one grid cell; return its figures, the worker and the queue it ran on.

    Bad data (a file that differs from the planned one, a bad row, too few bars for the
    windows, an LLM record this worker cannot see or write) fails the task with that error:
    an expected failure, logged without a traceback.
    """
    item = Cell.from_json(cell)
    figures = run_cell(item, host=_worker_llm() if item.llm_record is not None else None)
    delivery = self.request.delivery_info or {}
    return {
        "figures": figures,
        "worker": self.request.hostname,
        "queue": delivery.get("routing_key") or "unknown",
    }


def _worker_llm() -> HostLLM:
    """Return this worker's LLM for a cell: its config's ``llm``, its adapter (behind the
    fleet's limiter), and its event loop to run the cell's questions on."""
    rt = context.current()
    return HostLLM(config=rt.config().llm, port=rt.llm(), run=rt.run_async)


def _outcome(item: Cell, meta: dict[str, Any]) -> Outcome:
    """Return a cell's outcome from its result's metadata (a ready state)."""
    status, value = meta.get("status"), meta.get("result")
    if status == states.SUCCESS and isinstance(value, dict):
        where = f"{value.get('worker')} (queue {value.get('queue')})"
        return Outcome(item, figures=value["figures"], ran_on=where)
    if isinstance(value, BaseException):
        return Outcome(item, error=failure_line(value))
    return Outcome(item, error=f"{str(status).lower()}: {value!r}")


class _Quiet:
    """Calls ``progress.waiting`` after :data:`QUIET_SECONDS` without a cell ending."""

    def __init__(self, progress: Progress, total: int) -> None:
        self.progress, self.total, self.left = progress, total, total
        self.since = time.monotonic()

    def ended(self, left: int) -> None:
        self.left, self.since = left, time.monotonic()

    def tick(self) -> None:
        if time.monotonic() - self.since >= QUIET_SECONDS:
            self.progress.waiting(self.left, self.total)
            self.since = time.monotonic()


def run_grid(cells: Sequence[Cell], *, timeout: float, progress: Progress) -> list[Outcome]:
    """Send every cell as a ``backtest.cell`` task, one group; return each one's outcome.

    Waits until every cell has ended or ``timeout`` seconds have passed: a failed cell is
    reported at once with its error, a cell still queued or running at the timeout as such
    (and revoked, so it does not run after nobody waits for it). Outcomes come back in the
    order of ``cells``; none is dropped. A result backend that stops answering while
    waiting is read again until the timeout.
    """
    sent = group(cell.si(cell=c.to_json()) for c in cells).apply_async()
    try:
        index = {r.id: i for i, r in enumerate(sent.results)}
        ended = _collect(sent.backend, cells, index, timeout, progress)
        late = [task_id for task_id, i in index.items() if i not in ended]
        if late:
            with suppress(Exception):  # revoking is a courtesy: the outcome is known
                sent.app.control.revoke(late)
        note = f"no result within {timeout:g} s: still queued or running (revoked)"
        return [ended.get(i) or Outcome(c, error=note) for i, c in enumerate(cells)]
    finally:
        release(sent)


def _collect(
    backend: Any,
    cells: Sequence[Cell],
    index: dict[str, int],
    timeout: float,
    progress: Progress,
) -> dict[int, Outcome]:
    """Return the outcomes of the cells that ended before the deadline, by position."""
    deadline = time.monotonic() + timeout
    ended: dict[int, Outcome] = {}
    quiet = _Quiet(progress, len(cells))
    away = (*tuple(getattr(backend, "connection_errors", ()) or ()), ConnectionError, OSError)
    while len(ended) < len(cells) and time.monotonic() < deadline:
        pending = [task_id for task_id, i in index.items() if i not in ended]
        try:
            for task_id, meta in backend.get_many(
                pending,
                timeout=max(deadline - time.monotonic(), 0.0),
                interval=POLL_SECONDS,
                on_interval=quiet.tick,
                READY_STATES=states.READY_STATES,
            ):
                i = index[task_id]
                ended[i] = _outcome(cells[i], meta)
                quiet.ended(len(cells) - len(ended))
                progress.done(ended[i], len(ended), len(cells))
        except ResultTimeoutError:
            break
        except away:  # Redis away: read again until the deadline
            time.sleep(POLL_SECONDS)
    return ended
