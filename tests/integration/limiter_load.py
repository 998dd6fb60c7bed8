"""A process that hammers one limiter on a real Redis and records what it was admitted."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import redis

from core.keys import KeySpace
from ratelimit.backend import Charge
from ratelimit.backends.redis import RedisBackend
from ratelimit.pools import PoolSpec, Priority


def hammer(
    url: str,
    prefix: str,
    pools: list[dict[str, Any]],
    duration: float,
    out: str,
    seed: int,
    skew: float = 0.0,
    start_at: float = 0.0,
) -> None:
    """Ask for random weights until ``duration`` ends; write admitted (time, weight) as JSON.

    ``skew`` shifts this process's own clock (time.time and time.monotonic): the limiter must
    not care, because it reads time from Redis.
    """
    if skew:
        real_time, real_mono = time.time, time.monotonic
        time.time = lambda: real_time() + skew  # type: ignore[assignment]
        time.monotonic = lambda: real_mono() + skew  # type: ignore[assignment]
    backend = RedisBackend(redis.Redis.from_url(url), KeySpace(prefix))
    specs = [PoolSpec(**p) for p in pools]
    rng = random.Random(seed)
    while time.time() < start_at + skew:
        time.sleep(0.001)
    deadline = time.monotonic() + duration
    admitted = []
    while time.monotonic() < deadline:
        weight = rng.choice([1, 1, 2, 3])
        priority = rng.choice(list(Priority))
        result = backend.decide("load", [Charge(p, weight) for p in specs], priority)
        if result.allowed:
            admitted.append((result.at, weight))
    Path(out).write_text(json.dumps(admitted))
