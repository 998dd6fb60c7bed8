"""Tasks for the priority benchmark (loaded into its workers with ``-I``)."""

from __future__ import annotations

import os
import time

import redis
from celery import shared_task

_client: list[redis.Redis] = []


def _redis() -> redis.Redis:
    if not _client:
        _client.append(redis.Redis.from_url(os.environ["BENCH_REDIS_URL"]))
    return _client[0]


@shared_task(name="bench.busy")
def busy(seconds: float) -> None:
    """Keep a worker process busy (the low-priority backlog)."""
    time.sleep(seconds)


@shared_task(name="bench.mark")
def mark(sent_at: float) -> None:
    """Record how long this task waited between being sent and starting."""
    _redis().rpush("bench:waits", repr(time.time() - sent_at))
