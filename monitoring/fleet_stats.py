"""Fleet-wide counters for the alert rules: exchange calls, failures, latency, bans.

Each process's events (``core.events``) add to one-second buckets in Redis
(``<p>fleet:stats:<bucket>``, kept 15 minutes), so an evaluator anywhere reads the whole
fleet's last window, to the second (coarser buckets would make a window that has just
crossed a bucket edge see almost nothing). Business errors (bad symbol, no funds) and our
own rate-limit waits are not failures of the exchange and are not counted as errors.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, cast

import redis

from core.keys import KeySpace
from monitoring.alerts import Reading

BUCKET_SECONDS = 1
NOT_FAILURES = {
    "ok",
    "InvalidRequestError",
    "InsufficientFundsError",
    "GiveUpError",
    "RateLimitedError",
    "CircuitOpenError",
}


def listener(client: redis.Redis, keys: KeySpace) -> Callable[[str, Mapping[str, Any]], None]:
    """Return an events listener that counts into the current bucket."""

    def on_event(event: str, fields: Mapping[str, Any]) -> None:
        if event not in ("exchange.request", "exchange.throttled"):
            return
        key = keys.fleet_stats(int(time.time() // BUCKET_SECONDS))
        pipe = client.pipeline(transaction=False)
        if event == "exchange.request":
            pipe.hincrby(key, "requests", 1)
            pipe.hincrbyfloat(key, "latency_ms_sum", float(fields["seconds"]) * 1000)
            if str(fields.get("outcome", "ok")) not in NOT_FAILURES:
                pipe.hincrby(key, "errors", 1)
        elif int(fields.get("status", 0)) == 418:
            pipe.hincrby(key, "bans", 1)
        pipe.expire(key, 900)
        pipe.execute()

    return on_event


def read(
    client: redis.Redis,
    keys: KeySpace,
    window: float = 60.0,
    queue_sizes: Mapping[str, int] | None = None,
    open_breakers: tuple[str, ...] = (),
) -> Reading:
    """Return the fleet's reading over the last ``window`` seconds (one Redis round trip)."""
    now = int(time.time() // BUCKET_SECONDS)
    buckets = range(now - max(1, int(window // BUCKET_SECONDS)) + 1, now + 1)
    pipe = client.pipeline(transaction=False)
    for bucket in buckets:
        pipe.hgetall(keys.fleet_stats(bucket))
    totals: dict[str, float] = {"requests": 0, "errors": 0, "latency_ms_sum": 0.0, "bans": 0}
    for raw in cast(list[dict[bytes, bytes]], pipe.execute()):
        for name, value in raw.items():
            totals[name.decode()] = totals.get(name.decode(), 0) + float(value)
    return Reading(
        requests=int(totals["requests"]),
        errors=int(totals["errors"]),
        latency_ms_sum=totals["latency_ms_sum"],
        bans=int(totals["bans"]),
        queue_sizes=dict(queue_sizes or {}),
        open_breakers=open_breakers,
    )
