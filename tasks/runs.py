"""Analysis runs as Celery canvases: one chain per (exchange, symbol), all in one group.

    group(news.collect, market.snapshot) -> group(analysis.case long, short)
        -> strategy.decide -> execution.execute

Inputs travel as ids (run, exchange, symbol); outputs live in Redis under the run's keys.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

from celery import chain, group, shared_task
from celery.result import GroupResult

from core.config import AppConfig
from core.tracing import traceparent
from tasks import agents


def new_run_id() -> str:
    """Return a sortable run id (UTC time plus a random suffix)."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def symbol_chain(
    run_id: str, exchange: str, symbol: str, decided_at: str, parent: str | None = None
) -> Any:
    """Return the canvas of one symbol's run (``parent``: the run's traceparent)."""
    ids = {  # keywords: the router reads them
        "run_id": run_id,
        "exchange": exchange,
        "symbol": symbol,
        "traceparent": parent,
    }
    return chain(
        group(
            agents.collect_news.si(decided_at=decided_at, **ids),
            agents.market_snapshot.si(**ids),
        ),
        group(
            agents.analyse_case.s(side="long", **ids), agents.analyse_case.s(side="short", **ids)
        ),
        agents.decide.s(**ids),
        agents.execute.s(**ids),
    )


def watchlist_items(config: AppConfig) -> list[dict[str, Any]]:
    """Return the watchlist as small JSON items: ``[{"exchange": x, "symbols": [...]}]``."""
    return [{"exchange": i.exchange, "symbols": list(i.symbols)} for i in config.watchlist]


def run_canvas(
    run_id: str, decided_at: str, items: list[dict[str, Any]], parent: str | None = None
) -> Any:
    """Return the canvas of a run: one chain per (exchange, symbol), all in one group."""
    return group(
        [
            symbol_chain(run_id, item["exchange"], symbol, decided_at, parent)
            for item in items
            for symbol in item["symbols"]
        ]
    )


def watchlist_run(config: AppConfig, run_id: str | None = None) -> tuple[str, Any]:
    """Return (run id, canvas) covering every symbol of the watchlist."""
    run_id = run_id or new_run_id()
    decided_at = datetime.now(UTC).isoformat()
    return run_id, run_canvas(run_id, decided_at, watchlist_items(config), traceparent())


def submit_watchlist(config: AppConfig, run_id: str | None = None) -> tuple[str, Any]:
    """Send a whole watchlist run as one message; return (run id, its AsyncResult).

    Publishing every chain from the caller costs about a dozen Redis round trips per
    symbol (the tasks, the chord bookkeeping, a result subscription each); this sends one
    ``analysis.submit`` message and a worker, next to Redis, publishes the canvas. Wait for
    the run with :func:`wait_submitted`.
    """
    run_id = run_id or new_run_id()
    result = submit_run.apply_async(
        kwargs={
            "run_id": run_id,
            "decided_at": datetime.now(UTC).isoformat(),
            "items": watchlist_items(config),
            "traceparent": traceparent(),
        }
    )
    return run_id, result


@shared_task(name="analysis.submit")
def submit_run(
    run_id: str, decided_at: str, items: list[dict[str, Any]], traceparent: str | None = None
) -> str:
    """Publish a run's canvas from inside the fleet; return its saved group's id."""
    result = run_canvas(run_id, decided_at, items, traceparent).apply_async()
    result.save()  # the submitter restores the group by id to wait for it
    return str(result.id)


def wait_submitted(result: Any, timeout: float) -> list[Any]:
    """Return every chain's final result of a run sent by :func:`submit_watchlist`."""
    deadline = time.monotonic() + timeout
    group_id = result.get(timeout=max(1.0, deadline - time.monotonic()), propagate=True)
    runs = GroupResult.restore(group_id, app=result.app)
    if runs is None:
        raise LookupError(f"the run's group {group_id} is not in the result backend")
    return wait(runs, max(1.0, deadline - time.monotonic()))


def wait(result: Any, timeout: float) -> list[Any]:
    """Return every chain's final result (for a caller outside any task)."""
    deadline = time.monotonic() + timeout
    return list(result.get(timeout=max(1.0, deadline - time.monotonic()), propagate=True))
