"""The seed's PriorityQueueManager: submit payloads on the high/medium/low tiers.

    from workers.queues import Priority, PriorityQueueManager

    manager = PriorityQueueManager(redis_client)
    await manager.start()
    task_id = await manager.submit_task(priority=Priority.HIGH,
                                        payload={"action": "ping"},
                                        callback=lambda result, error: print(result, error))

Payloads run as the ``fleet.payload`` task on the queue of their priority; a callback is
called once with ``(result, None)`` or ``(None, error)`` when the task finishes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio

from ratelimit.pools import Priority

__all__ = ["Priority", "PriorityQueueManager"]

Callback = Callable[[Any, BaseException | None], None]


class PriorityQueueManager:
    """Send payloads to the fleet by priority and report their outcome.

    ``redis_client`` (a ``redis.Redis`` or ``redis.asyncio.Redis``) is accepted for the seed's
    signature; the broker is the fleet's, from its configuration.
    """

    def __init__(
        self, redis_client: redis.Redis | redis.asyncio.Redis | None = None, poll: float = 0.05
    ) -> None:
        self.redis = redis_client
        self.poll = poll
        self._watchers: set[asyncio.Task[None]] = set()
        self._started = False

    async def start(self) -> None:
        """Bind to the fleet's Celery app (configured from the runtime)."""
        from workers.app import app

        self.app = app
        self._started = True

    async def submit_task(
        self,
        priority: Priority | str,
        payload: dict[str, Any],
        callback: Callback | None = None,
    ) -> str:
        """Queue ``payload`` on its priority's queue; return the task id."""
        if not self._started:
            raise RuntimeError("call await manager.start() first")
        queue = Priority.parse(priority).name.lower()
        result = self.app.send_task("fleet.payload", args=[payload], queue=queue)
        if callback is not None:
            watcher = asyncio.create_task(self._watch(result, callback))
            self._watchers.add(watcher)
            watcher.add_done_callback(self._watchers.discard)
        return str(result.id)

    async def _watch(self, result: Any, callback: Callback) -> None:
        while not await asyncio.to_thread(result.ready):
            await asyncio.sleep(self.poll)
        try:
            value = await asyncio.to_thread(result.get, propagate=True)
        except Exception as exc:  # the task's error goes to the callback
            callback(None, exc)
        else:
            callback(value, None)

    async def stop(self) -> None:
        """Stop watching for results (queued tasks still run)."""
        for watcher in list(self._watchers):
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
