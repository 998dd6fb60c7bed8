"""The order gate on every exchange and every path: paper means paper, the guard holds.

One fleet, one sandbox per exchange dialect. Each sandbox is configured with
``is_sandbox: false`` (a URL the config says is a real exchange), so paper mode must simulate
every order, whichever exchange and whichever public path sends it: the resilient client in
this process, the seed API (``submit_trading_request``), a ``PriorityQueueManager`` payload
and a raw REST write in that exchange's own dialect. The risk guard refuses an order over
``max_notional_per_order`` on every exchange the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from core.config import AppConfig
from core.errors import OrderRefusedError
from core.keys import KeySpace
from exchanges.profiles import SUPPORTED
from resilience import ResilientAPIClient
from tests.integration.sandbox_fixtures import admin, running_sandbox
from tests.integration.workers import worker_fleet

pytestmark = pytest.mark.integration

#: Each dialect's own REST order write: a path the gate cannot check, so it is refused.
RAW_ORDER = {
    "binance": "POST /api/v3/order",
    "okx": "POST /api/v5/trade/order",
    "kraken": "POST /0/private/AddOrder",
    "coinbase": "POST /api/v3/brokerage/orders",
    "htx": "POST /v1/order/orders/place",
}
BUY = {"symbol": "BTC/USDT", "type": "market", "side": "buy", "amount": 0.0005}


def direct(config: AppConfig, client: redis.Redis, exchange: str, endpoint: str) -> Any:
    """Send one request through ``ResilientAPIClient`` in this process; return data or error."""
    params: Any = BUY if endpoint == "create_order" else {"symbol": "BTC/USDT"}
    api = ResilientAPIClient(client, config)

    async def call() -> Any:
        try:
            return (await api.resilient_request(exchange, endpoint, params)).data
        except OrderRefusedError as exc:
            return exc
        finally:
            await api.close()

    return asyncio.run(call())


def through_tasks(app: Any, config_path: Path, exchange: str) -> list[Any]:
    """Send one order by the seed API and one by a PriorityQueueManager payload."""
    from main import MultiExchangeTradingSystem
    from workers.queues import Priority, PriorityQueueManager

    def outcome(task_id: str) -> Any:
        try:
            return app.AsyncResult(task_id).get(timeout=60)["data"]
        except Exception as exc:  # the worker's error, re-raised by Celery by its name
            return exc

    async def scenario() -> list[Any]:
        system = MultiExchangeTradingSystem(config_path)
        system.app, system._started = app, True
        seed = await system.submit_trading_request(exchange, "create_order", BUY, "high")
        manager = PriorityQueueManager()
        manager.app, manager._started = app, True
        payload = {"action": "exchange_request", "exchange": exchange}
        queued = await manager.submit_task(
            Priority.HIGH, {**payload, "endpoint": "create_order", "params": BUY}
        )
        return [await asyncio.to_thread(outcome, seed), await asyncio.to_thread(outcome, queued)]

    return asyncio.run(scenario())


def test_paper_mode_and_the_guard_hold_on_every_exchange_and_path(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with contextlib.ExitStack() as stack:
        sandboxes = {
            ccxt_id: stack.enter_context(
                running_sandbox(dialect=ccxt_id, starting_balances={"USDT": 100000})
            )
            for ccxt_id in SUPPORTED
        }
        settings: dict[str, Any] = {
            "redis": {"key_prefix": namespace},
            # a URL on this host that the config says is a real exchange: paper must simulate
            "exchanges": {
                x: {"base_url": sb.url, "is_sandbox": False} for x, sb in sandboxes.items()
            },
            "retry_strategies": {"default": {"max_attempts": 2, "base_delay": 0.05}},
            "trading": {"risk": {"max_position_per_symbol": 100000}},
        }
        config = AppConfig.model_validate(settings)
        guarded = AppConfig.model_validate(
            {**settings, "trading": {"risk": {"max_notional_per_order": 1}}}
        )
        here: dict[str, dict[str, Any]] = {}
        for exchange in SUPPORTED:
            here[exchange] = {
                "create": direct(config, redis_client, exchange, "create_order"),
                "raw": direct(config, redis_client, exchange, RAW_ORDER[exchange]),
                "cancel": direct(config, redis_client, exchange, "cancel_order"),
                "guard": direct(guarded, redis_client, exchange, "create_order"),
            }
        # the protective order list is the gate's own (exits and protection only): sent as a
        # raw write from outside, it is refused like any raw order write
        oco = direct(config, redis_client, "binance", "POST /api/v3/orderList/oco")
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(settings))
        with worker_fleet(redis_url, namespace, tmp_path) as fleet:
            fleet.start("gate", concurrency=2)
            app = fleet.client_app()
            tasks = {x: through_tasks(app, path, x) for x in SUPPORTED}
        placed = {x: sum(admin(sb.url, "stats")["orders"].values()) for x, sb in sandboxes.items()}
    for exchange in SUPPORTED:
        got = here[exchange]
        assert got["create"]["status"] == "simulated", (exchange, got["create"])
        assert isinstance(got["raw"], OrderRefusedError), (exchange, got["raw"])
        assert "raw REST order write" in str(got["raw"]), exchange
        assert got["cancel"]["simulated"] is True, (exchange, got["cancel"])
        assert isinstance(got["guard"], OrderRefusedError), (exchange, got["guard"])
        assert "over a risk limit" in str(got["guard"]), (exchange, got["guard"])
        seed, payload = tasks[exchange]
        assert isinstance(seed, dict) and seed["status"] == "simulated", (exchange, seed)
        assert isinstance(payload, dict) and payload["status"] == "simulated", (exchange, payload)
        assert seed["clientOrderId"] != payload["clientOrderId"], exchange
    assert isinstance(oco, OrderRefusedError) and "raw REST order write" in str(oco), oco
    assert placed == dict.fromkeys(SUPPORTED, 0), "paper mode sent an order to a real exchange"
    audit = redis_client.xrange(KeySpace(namespace).order_audit())
    by_exchange: dict[str, int] = {}
    for _, fields in audit:
        assert fields[b"mode"] == b"paper", fields
        name = fields[b"exchange"].decode()
        by_exchange[name] = by_exchange.get(name, 0) + 1
    assert set(by_exchange) == set(SUPPORTED), by_exchange
