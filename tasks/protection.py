"""The fleet watch of open positions: ``protection.watch``, every few seconds on ``high``.

A shell over :func:`resilience.watch.watch`: one pass at a time fleet-wide (a lease), so a
slow pass and the next beat do not both act; each action is idempotent anyway (an exit is
named by its position, a protection by its position and amount).
"""

from __future__ import annotations

import uuid
from typing import Any

from celery import shared_task

from resilience.watch import watch
from tasks import context


@shared_task(name="protection.watch")
def protection_watch() -> dict[str, Any]:
    """Run one pass of the fleet watch; return what it did (``busy``: another pass runs)."""
    rt = context.current()
    redis, key = rt.redis_client(), rt.keyspace().protection_lock()
    token = uuid.uuid4().hex
    seconds = max(rt.config().trading.protection.watch_seconds * 6, 30.0)
    if not redis.set(key, token, nx=True, ex=int(seconds)):
        return {"busy": True}
    try:
        done = rt.run_async(watch(rt.exchange_client()), seconds)
    finally:
        if (redis.get(key) or b"").decode() == token:  # type: ignore[union-attr]
            redis.delete(key)
    return {"actions": done.actions, "errors": done.errors}
