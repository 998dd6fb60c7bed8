"""Shared helpers: a Redis to measure on, and percentiles."""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
from collections.abc import Iterator
from pathlib import Path

from workers.redis_server import EmbeddedRedis


@contextlib.contextmanager
def redis_for_bench() -> Iterator[str]:
    """Yield ``$REDIS_URL``, or the URL of an embedded redis-server started for the run."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp), appendonly=False) as server:
        yield server.url


def percentile(samples: list[float], q: float) -> float:
    """Return the q-th percentile (0..100) of ``samples``."""
    return statistics.quantiles(samples, n=1000, method="inclusive")[int(q * 10) - 1]
