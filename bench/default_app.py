"""A Celery app with Celery's default settings, for the priority benchmark's baseline.

Defaults that matter here: prefetch multiplier 4, acks on receipt, and the Redis transport's
round-robin queue order.
"""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

app = Celery(
    "bench_default", broker=os.environ["BENCH_REDIS_URL"], include=["bench.priority_tasks"]
)
app.conf.task_queues = [Queue("high"), Queue("medium"), Queue("low")]
