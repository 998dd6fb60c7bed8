"""Health round trip: a task any worker answers on the queue it was sent to."""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Task, shared_task

from tasks import context


@shared_task(name="health.ping", bind=True)
def ping(self: Task, sent_at: float | None = None) -> dict[str, Any]:
    """Answer with the worker, queue and pid that ran the task, and record it in Redis."""
    queue = (self.request.delivery_info or {}).get("routing_key") or "unknown"
    now = time.time()
    answer: dict[str, Any] = {
        "worker": self.request.hostname,
        "queue": queue,
        "pid": os.getpid(),
        "at": now,
        "latency_ms": round((now - sent_at) * 1000, 1) if sent_at else None,
    }
    runtime = context.current()
    runtime.redis_client().hset(
        runtime.keyspace().health(queue),
        mapping={k: str(v) for k, v in answer.items() if v is not None},
    )
    return answer
