"""A bare order sent as a task is placed once however often its message is delivered.

``submit_trading_request`` and PriorityQueueManager payloads queue a ``create_order`` the
caller may send without a client order id. With late acknowledgement the broker delivers
a message again after a worker's connection dropped or the worker died, with the same task
id; the gate names such an order by its delivery (the task id and its place in the task),
so the second delivery finds the first's order instead of placing another. Real Redis, a
real ``celery worker``, the sandbox over HTTP.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.integration.sandbox_fixtures import admin, running_sandbox
from tests.integration.test_order_gate import eth_price, fleet_on, orders_at, settings

pytestmark = pytest.mark.integration


def deliver_twice(app: Any, name: str, args: list[Any]) -> list[Any]:
    """Deliver one message twice, as a redelivery does (same task id); return both results."""
    task_id = f"redelivered-{uuid.uuid4().hex[:8]}"
    first = app.send_task(name, args=args, queue="high", task_id=task_id)
    answers = [first.get(timeout=60)]
    first.forget()  # so that the same task id waits for the second delivery's outcome
    again = app.send_task(name, args=args, queue="high", task_id=task_id)
    answers.append(again.get(timeout=60))
    return answers


def test_a_bare_order_task_delivered_twice_places_one_order(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with running_sandbox(starting_balances={"USDT": 100000}) as sb:
        config = settings(sb.url, namespace)
        amount = round(20 / eth_price(config, redis_client), 4)
        order = {"symbol": "ETH/USDT", "type": "market", "side": "buy", "amount": amount}
        with fleet_on(redis_url, namespace, tmp_path, config) as fleet:
            app = fleet.client_app()
            seed = deliver_twice(app, "exchange.request", ["binance", "create_order", order])
            payload = {"action": "exchange_request", "exchange": "binance"}
            queued = deliver_twice(
                app, "fleet.payload", [{**payload, "endpoint": "create_order", "params": order}]
            )
        sent = orders_at(sb.url)
        stats = admin(sb.url, "stats")
    for first, second in (seed, queued):
        assert second["data"]["id"] == first["data"]["id"], (first, second)
        assert second["source"] == "found", second
    assert seed[0]["data"]["id"] != queued[0]["data"]["id"], "two messages, two orders"
    assert sent == 2, f"{sent} order requests for two messages delivered twice each"
    assert stats["orders"] == {"sandbox-key": 2}, stats["orders"]
