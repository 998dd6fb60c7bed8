"""Queue depths from the broker (kombu's Redis transport layout) and budgets left."""

from __future__ import annotations

import redis

from core.errors import LimiterUnavailableError
from core.keys import KeySpace
from ratelimit.manager import ExchangeRateLimitManager

# kombu's Redis transport keeps one list per priority step (KeySpace.queue names them).
_PRIORITY_STEPS = (0, 3, 6, 9)


def queue_depths(client: redis.Redis, keys: KeySpace, queues: tuple[str, ...]) -> dict[str, int]:
    """Return the number of messages waiting in each queue (all priority steps counted)."""
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        for step in _PRIORITY_STEPS:
            pipe.llen(keys.queue(queue, step))
    lengths = pipe.execute()
    steps = len(_PRIORITY_STEPS)
    return {q: sum(lengths[i * steps : (i + 1) * steps]) for i, q in enumerate(queues)}


def budgets(limiter: ExchangeRateLimitManager) -> dict[str, dict[str, float]]:
    """Return what remains of every exchange pool now (a check that charges nothing)."""
    remaining = {}
    for exchange in limiter.tables:
        if exchange.startswith(("llm", "news:")):
            continue
        try:
            answer = limiter.decide(exchange, "public", weight=0, priority="high", charge=False)
        except (ValueError, LimiterUnavailableError):
            continue
        remaining[exchange] = {pool: round(left, 1) for pool, left in answer.remaining.items()}
    return remaining
