"""One exchange request as a task, for the seed's ``submit_trading_request``."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from resilience import FallbackConfig
from tasks import context


@shared_task(name="exchange.request")
def request(
    exchange: str, endpoint: str, params: dict[str, Any] | None = None, fallback: str = "partial"
) -> dict[str, Any]:
    """Make one resilient exchange call; return its data and how it was served."""
    rt = context.current()
    answer = rt.run_async(
        rt.exchange_client().resilient_request(
            exchange, endpoint, params or {}, FallbackConfig(level=fallback)
        ),
        120,
    )
    return {
        "data": answer.data,
        "level": answer.level.name,
        "source": answer.source,
        "stale": answer.stale,
        "age": answer.age,
    }


@shared_task(name="fleet.payload")
def payload(body: dict[str, Any]) -> Any:
    """Run a PriorityQueueManager payload: ``{"action": "exchange_request" | "ping", ...}``."""
    action = body.get("action")
    if action == "exchange_request":
        return request(body["exchange"], body["endpoint"], body.get("params") or {})
    if action == "ping":
        return {"pong": True}
    raise ValueError(f"unknown payload action {action!r}; expected exchange_request or ping")
