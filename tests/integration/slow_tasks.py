"""Tasks used only by the integration tests (loaded into test workers with ``-I``)."""

from __future__ import annotations

import time

from celery import Task, shared_task

from tasks import context


@shared_task(name="test.record", bind=True)
def record(self: Task, key: str, label: str, seconds: float = 0.0) -> str:
    """Append ``label`` to the list ``key`` (under the namespace), sleeping first."""
    runtime = context.current()
    client = runtime.redis_client()
    full = runtime.keyspace().prefix + key
    client.rpush(full + ":started", f"{label}@{self.request.hostname}")
    time.sleep(seconds)
    client.rpush(full, f"{label}@{self.request.hostname}")
    return label
