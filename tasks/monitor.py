"""The alert evaluation, run by beat every ``monitoring.alerts.evaluation_interval``."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from core.config import PRIORITY_QUEUES
from monitoring import fleet_stats
from monitoring.alerts import AlertEngine
from monitoring.metrics import QUEUE_DEPTH
from monitoring.queues import queue_depths
from resilience.breaker import ENDPOINT_CLASSES, SharedBreaker
from tasks import context


@shared_task(name="monitor.alerts")
def evaluate_alerts() -> list[dict[str, Any]]:
    """Read the fleet's last minute, evaluate the alert rules, send notifications."""
    rt = context.current()
    config, client, keys = rt.config(), rt.redis_client(), rt.keyspace()
    if not config.monitoring.alerts.enabled:
        return []
    depths = queue_depths(client, keys, PRIORITY_QUEUES)
    for queue, depth in depths.items():
        QUEUE_DEPTH.labels(queue).set(depth)
    opened = tuple(
        f"{exchange}:{klass}"
        for exchange in config.exchanges
        for klass in ENDPOINT_CLASSES
        if SharedBreaker(client, exchange, klass, keys=keys).state() == "open"
    )
    reading = fleet_stats.read(client, keys, queue_sizes=depths, open_breakers=opened)
    notes = AlertEngine(client, keys, config.monitoring.alerts).evaluate(reading)
    return [{"alert": n.alert, "status": n.status, "detail": n.detail} for n in notes]
