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

from celery import chain, group

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


def watchlist_run(config: AppConfig, run_id: str | None = None) -> tuple[str, Any]:
    """Return (run id, canvas) covering every symbol of the watchlist."""
    run_id = run_id or new_run_id()
    decided_at = datetime.now(UTC).isoformat()
    parent = traceparent()
    chains = [
        symbol_chain(run_id, item.exchange, symbol, decided_at, parent)
        for item in config.watchlist
        for symbol in item.symbols
    ]
    return run_id, group(chains)


def wait(result: Any, timeout: float) -> list[Any]:
    """Return every chain's final result (for a caller outside any task)."""
    deadline = time.monotonic() + timeout
    return list(result.get(timeout=max(1.0, deadline - time.monotonic()), propagate=True))
