"""Which priority queue a task goes to, by the first part of its name.

Execution, cancels and reconciliation go to ``high``; analysts and strategy to ``medium``;
news, market refresh, reports and backtest grid cells to ``low``. A ``queue=`` given at send
time wins. Work for an exchange listed in ``celery.dedicated_exchanges`` goes to that
exchange's own queues (``binance.high``, ``binance.medium``, ``binance.low``), so a pool of
workers can serve it.
"""

from __future__ import annotations

from typing import Any

QUEUE_BY_PREFIX = {
    "execution": "high",
    "orders": "high",
    "reconcile": "high",
    "monitor": "high",
    "protection": "high",
    "analysis": "medium",
    "strategy": "medium",
    "news": "low",
    "market": "low",
    "report": "low",
    "backtest": "low",
    "exchange": "medium",
    "fleet": "medium",
}


def queue_for(task_name: str) -> str | None:
    """Return the queue for a task name such as ``execution.execute``, or None."""
    return QUEUE_BY_PREFIX.get(task_name.split(".", 1)[0])


class TierRouter:
    """Celery router: the tier by task name, on an exchange's own queues when dedicated."""

    def __init__(self, dedicated: list[str] | tuple[str, ...] = ()) -> None:
        self.dedicated = frozenset(dedicated)

    def __call__(
        self, name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **kw: Any
    ) -> Any:
        """Return ``{"queue": ...}`` for the task, or None for Celery's default."""
        queue = queue_for(name)
        if queue is None:
            return None
        exchange = (kwargs or {}).get("exchange")
        if exchange in self.dedicated:
            return {"queue": f"{exchange}.{queue}"}
        return {"queue": queue}
