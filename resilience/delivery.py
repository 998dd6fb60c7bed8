"""The task delivery an order write belongs to, so a bare order is named the same every time.

A ``create_order`` sent without a client order id (``submit_trading_request``, a
PriorityQueueManager payload, a user's own task) would get a fresh random id on each
delivery of its message, and a redelivery (late acknowledgement: the broker gives an
unacknowledged message to a worker again after a connection loss or a dead worker) would
place it a second time. The worker opens a delivery scope for every task it runs (named by
the task id, the same on every delivery of one message); the order gate names the n-th bare
order of the scope by (task id, n), so the second delivery finds the first's order by that
id instead of placing another. Outside a task (a script calling ``ResilientAPIClient``)
there is no scope and a bare order gets a random id, idempotent only within its own retries.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass


@dataclass
class _Delivery:
    task_id: str
    writes: int = 0


_current: contextvars.ContextVar[_Delivery | None] = contextvars.ContextVar(
    "crypto_ai_delivery", default=None
)


def begin(task_id: str) -> contextvars.Token[_Delivery | None]:
    """Open the scope of one task delivery in the current context; return its token."""
    return _current.set(_Delivery(task_id))


def end(token: contextvars.Token[_Delivery | None]) -> None:
    """Close the scope ``begin`` opened."""
    _current.reset(token)


def next_order_key() -> str | None:
    """Return ``<task id>|<n>`` for the n-th bare order of this delivery, or None outside one."""
    delivery = _current.get()
    if delivery is None:
        return None
    key = f"{delivery.task_id}|{delivery.writes}"
    delivery.writes += 1
    return key
