"""What the fleet is doing: workers, queue depths, the last health round trips, LLM usage."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import redis
from celery import Celery

from core.config import PRIORITY_QUEUES, AppConfig
from core.keys import KeySpace
from llm.usage import RedisUsage
from monitoring.alerts import AlertEngine
from monitoring.queues import budgets, queue_depths
from ratelimit.manager import ExchangeRateLimitManager
from resilience.breaker import ENDPOINT_CLASSES, SharedBreaker


@dataclass
class FleetStatus:
    """A snapshot of the fleet, the same facts for the terminal view and for JSON."""

    redis: str
    workers: dict[str, list[str]] = field(default_factory=dict)
    queues: dict[str, int] = field(default_factory=dict)
    health: dict[str, dict[str, str]] = field(default_factory=dict)
    breakers: dict[str, dict[str, Any]] = field(default_factory=dict)
    budgets: dict[str, dict[str, float]] = field(default_factory=dict)
    alerts: dict[str, Any] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)
    llm: dict[str, Any] = field(default_factory=dict)
    taken_at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        """Return the snapshot as plain JSON-able data."""
        return asdict(self)


def worker_queues(app: Celery, timeout: float = 1.0) -> dict[str, list[str]]:
    """Return each live worker's name with the queues it consumes."""
    replies = app.control.inspect(timeout=timeout).active_queues() or {}
    return {name: sorted(q["name"] for q in queues) for name, queues in replies.items()}


def last_health(client: redis.Redis, keys: KeySpace) -> dict[str, dict[str, str]]:
    """Return the last recorded health round trip per queue."""
    health = {}
    for queue in PRIORITY_QUEUES:
        raw = cast(dict[bytes, bytes], client.hgetall(keys.health(queue)))
        if raw:
            health[queue] = {k.decode(): v.decode() for k, v in raw.items()}
    return health


def llm_today(client: redis.Redis, keys: KeySpace, config: AppConfig) -> dict[str, Any]:
    """Return the fleet's LLM usage today (UTC): calls, tokens, cost, the budget left."""
    today = RedisUsage(client, keys).day()
    budget = config.llm.budget_per_day
    return {
        **today.as_dict(),
        "budget_per_day": budget,
        "budget_left": None if budget is None else max(0, budget - today.tokens),
    }


def llm_line(today: dict[str, Any]) -> str:
    """Return the day's LLM usage (:func:`llm_today`) as the one line status prints."""
    calls = int(today.get("calls", 0))
    if calls:
        failed = f" ({today['failed']} failed)" if today.get("failed") else ""
        text = (
            f"{calls} calls{failed}, {today['prompt_tokens']:,} prompt + "
            f"{today['completion_tokens']:,} completion tokens, "
            f"{float(today['seconds']) / calls:.2f}s per call"
        )
        if today.get("unmetered"):
            text += f", {today['unmetered']} without reported usage"
        if today.get("cost") is not None:
            text += f", cost {float(today['cost']):.4f}"
    else:
        text = "no calls"
    budget = today.get("budget_per_day")
    if budget is not None:
        text += f"; budget {budget:,} tokens, {today['budget_left']:,} left"
    return f"LLM today (UTC): {text}"


def fleet_status(
    app: Celery, client: redis.Redis, keys: KeySpace, redis_label: str, config: AppConfig
) -> FleetStatus:
    """Gather a :class:`FleetStatus` from the broker, the workers and the shared state."""
    breakers = {
        f"{exchange}:{klass}": SharedBreaker(client, exchange, klass, keys=keys).snapshot()
        for exchange in config.exchanges
        for klass in ENDPOINT_CLASSES
    }
    runs = [r.decode() for r in cast(list[bytes], client.zrevrange(keys.runs_index(), 0, 4))]
    return FleetStatus(
        redis=redis_label,
        workers=worker_queues(app),
        queues=queue_depths(client, keys, config.queues()),
        health=last_health(client, keys),
        breakers=breakers,
        budgets=budgets(ExchangeRateLimitManager(client, config)),
        alerts=AlertEngine(client, keys, config.monitoring.alerts).active(),
        runs=runs,
        llm=llm_today(client, keys, config),
    )
