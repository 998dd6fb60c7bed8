"""The alert evaluation, run by beat every ``monitoring.alerts.evaluation_interval``."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from monitoring import fleet_stats
from monitoring.alerts import AlertEngine
from monitoring.metrics import BREAKER_STATE, BUDGET_LEFT, QUEUE_DEPTH
from monitoring.queues import budgets, queue_depths
from resilience.breaker import ENDPOINT_CLASSES, SharedBreaker
from tasks import context


@shared_task(name="monitor.alerts")
def evaluate_alerts() -> list[dict[str, Any]]:
    """Read the fleet's last minute, evaluate the alert rules, send notifications."""
    rt = context.current()
    config, client, keys = rt.config(), rt.redis_client(), rt.keyspace()
    if not config.monitoring.alerts.enabled:
        return []
    depths = queue_depths(client, keys, config.queues())
    for queue, depth in depths.items():
        QUEUE_DEPTH.labels(queue).set(depth)
    states = {
        f"{exchange}:{klass}": SharedBreaker(client, exchange, klass, keys=keys).state()
        for exchange in config.exchanges
        for klass in ENDPOINT_CLASSES
    }
    for name, state in states.items():
        BREAKER_STATE.labels(name).set({"closed": 0, "half_open": 1, "open": 2}[state])
    for exchange, pools in budgets(rt.exchange_client().limiter).items():
        for pool, left in pools.items():
            BUDGET_LEFT.labels(exchange, pool).set(left)
    opened = tuple(name for name, state in states.items() if state == "open")
    reading = fleet_stats.read(client, keys, queue_sizes=depths, open_breakers=opened)
    notes = AlertEngine(client, keys, config.monitoring.alerts).evaluate(reading)
    return [{"alert": n.alert, "status": n.status, "detail": n.detail} for n in notes]
