"""A fault storm on the sandbox raises the error-rate and breaker alerts; they resolve after."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp import web

from core import events
from core.config import AlertsConfig, AppConfig
from core.keys import KeySpace
from monitoring import fleet_stats
from monitoring.alerts import AlertEngine
from resilience import FallbackConfig, ResilientAPIClient
from resilience.breaker import SharedBreaker
from sandbox.thread import AppThread
from tests.integration.sandbox_fixtures import admin, running_sandbox

pytestmark = pytest.mark.integration


def webhook() -> tuple[AppThread, list[dict[str, Any]]]:
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/hook", hook)
    return AppThread(app), received


def test_fault_storm_fires_and_then_resolves_alerts(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    keys = KeySpace(namespace)
    listen = fleet_stats.listener(redis_client, keys)
    events.subscribe(listen)
    hook_server, received = webhook()
    hook_server.start()
    try:
        with running_sandbox() as sb:
            cfg = AppConfig.model_validate(
                {
                    "redis": {"key_prefix": namespace},
                    "exchanges": {
                        "binance": {
                            "base_url": sb.url,
                            "circuit_breaker": {"failure_threshold": 3, "recovery_timeout": 2},
                        }
                    },
                    "retry_strategies": {"default": {"max_attempts": 1}},
                    # a short batch window: each poll is one (batched) upstream call
                    "performance": {"batch_processing": {"batch_timeout": 0.05}},
                }
            )
            alerts = AlertsConfig.model_validate(
                {
                    "thresholds": {"error_rate": 0.2, "response_time": 5000, "queue_size": 100},
                    "repeat_interval": 3600,
                    "webhook_url": f"{hook_server.url}/hook",
                }
            )
            engine = AlertEngine(redis_client, keys, alerts)
            breaker = SharedBreaker(
                redis_client,
                "binance",
                "public",
                keys=keys,
                failure_threshold=3,
                recovery_timeout=2,
            )

            def reading() -> Any:
                opened = ("binance:public",) if breaker.state() == "open" else ()
                return fleet_stats.read(redis_client, keys, window=10, open_breakers=opened)

            admin(
                sb.url,
                "faults",
                "PUT",
                [{"kind": "http_500", "endpoint": "GET /api/v3/ticker/24hr"}],
            )
            asyncio.run(_poll(redis_client, cfg, 6))
            storm = engine.evaluate(reading())
            again = engine.evaluate(reading())  # still firing: no repeat before the interval
            admin(sb.url, "faults", "DELETE")
            time.sleep(2.2)  # the breaker's recovery time
            asyncio.run(_poll(redis_client, cfg, 3))
            time.sleep(10)  # the failures leave the 10-second window
            asyncio.run(_poll(redis_client, cfg, 3))
            calm = engine.evaluate(reading())
    finally:
        events.unsubscribe(listen)
        hook_server.stop()
    assert {(n.alert, n.status) for n in storm} == {
        ("error_rate", "firing"),
        ("breaker_open", "firing"),
    }
    assert again == []
    assert {(n.alert, n.status) for n in calm} == {
        ("error_rate", "resolved"),
        ("breaker_open", "resolved"),
    }
    stream = redis_client.xrange(f"{namespace}alerts:stream")
    assert [f[b"status"].decode() for _, f in stream] == [
        "firing",
        "firing",
        "resolved",
        "resolved",
    ]
    assert sorted((r["alert"], r["status"]) for r in received) == [
        ("breaker_open", "firing"),
        ("breaker_open", "resolved"),
        ("error_rate", "firing"),
        ("error_rate", "resolved"),
    ]
    assert engine.active() == {}


async def _poll(client: redis.Redis, cfg: AppConfig, count: int) -> None:
    api = ResilientAPIClient(client, cfg, coalesce=False)
    try:
        for _ in range(count):
            await api.resilient_request(
                "binance",
                "fetch_ticker",
                {"symbol": "BTC/USDT"},
                FallbackConfig(level="full", cache_enabled=False),
            )
    finally:
        await api.close()
