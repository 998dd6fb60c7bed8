"""A process that reports events; it sets the metrics directory before prometheus loads."""

from __future__ import annotations

import os


def report(directory: str, exchange: str, count: int) -> None:
    """Emit ``count`` exchange requests and one breaker trip as events."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    from core.events import emit
    from monitoring import metrics

    metrics.install()
    for _ in range(count):
        emit(
            "exchange.request",
            exchange=exchange,
            endpoint="fetch_ticker",
            outcome="ok",
            seconds=0.02,
        )
    emit("breaker.transition", breaker=f"{exchange}:public", transition="closed->open")
