"""Tasks used only by the integration tests (loaded into test workers with ``-I``)."""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Task, shared_task
from celery.signals import task_prerun

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


#: Set in a test worker's environment to record every task it runs (see ``_record_delivery``).
RECORD_DELIVERIES = "CRYPTO_AI_TEST_RECORD_DELIVERIES"


@task_prerun.connect
def _record_delivery(task: Task | None = None, kwargs: Any = None, **_: Any) -> None:
    """Append ``worker queue task exchange`` to ``test:deliveries`` when the test asked.

    Lets a test see which worker and which queue ran each exchange's tasks (dedicated queues).
    """
    if task is None or not os.environ.get(RECORD_DELIVERIES):
        return
    runtime = context.current()
    queue = (task.request.delivery_info or {}).get("routing_key", "")
    exchange = (kwargs or {}).get("exchange") or "-"
    line = f"{task.request.hostname} {queue} {task.name} {exchange}"
    runtime.redis_client().rpush(runtime.keyspace().prefix + "test:deliveries", line)
