"""The seed's Python API against a real worker: MultiExchangeTradingSystem, PriorityQueueManager,
the beat guard, and a high-priority task behind a 10,000-task low backlog."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from tests.integration.sandbox_fixtures import running_sandbox
from tests.integration.workers import worker_fleet

pytestmark = pytest.mark.integration


def test_seed_api_submits_requests_and_reports_status(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    from main import MultiExchangeTradingSystem
    from workers import runtime
    from workers.queues import Priority, PriorityQueueManager

    with running_sandbox() as sb, worker_fleet(redis_url, namespace, tmp_path) as fleet:
        config = tmp_path / "config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "exchanges": {"binance": {"base_url": sb.url}},
                    "redis": {"url": redis_url, "key_prefix": namespace},
                }
            )
        )
        fleet.start("seed", queues="high,medium,low")
        app = fleet.client_app()

        async def scenario() -> tuple[Any, Any, list[Any]]:
            system = MultiExchangeTradingSystem(config)
            await system.start()
            system.app = app  # this test's client app: the same broker and prefix
            task_id = await system.submit_trading_request(
                exchange="binance",
                endpoint="/api/v3/ticker/price",
                params={"symbol": "BTCUSDT"},
                priority="high",
            )
            answer = await asyncio.to_thread(app.AsyncResult(task_id).get, timeout=30)
            status = await system.get_system_status()
            manager = PriorityQueueManager(redis_client)
            await manager.start()
            manager.app = app
            got: list[Any] = []
            await manager.submit_task(
                priority=Priority.HIGH,
                payload={"action": "ping"},
                callback=lambda result, error: got.append((result, error)),
            )
            await manager.submit_task(
                priority="low",
                payload={"action": "dance"},
                callback=lambda result, error: got.append((result, error)),
            )
            deadline = time.time() + 30
            while len(got) < 2 and time.time() < deadline:
                await asyncio.sleep(0.05)
            return answer, status, got

        try:
            answer, status, got = asyncio.run(scenario())
        finally:
            runtime.configure(runtime.config())  # forget this test's clients
    assert answer["source"] == "exchange" and float(answer["data"]["price"]) > 0
    assert set(status["queue_stats"]["priority"]) == {"high", "medium", "low"}
    assert status["circuit_breakers"]["breakers"]["binance:public"]["state"] == "closed"
    assert any(w.startswith("seed@") for w in status["workers"])
    assert ({"pong": True}, None) in got
    errors = [e for r, e in got if e is not None]
    assert len(errors) == 1 and "unknown payload action 'dance'" in str(errors[0])


def test_two_beats_sending_the_same_run_start_it_once(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with running_sandbox() as sb, worker_fleet(redis_url, namespace, tmp_path) as fleet:
        (tmp_path / "config.yaml").write_text(
            yaml.safe_dump(
                {
                    "exchanges": {"binance": {"base_url": sb.url}},
                    "watchlist": [{"exchange": "binance", "symbols": ["BTC/USDT"]}],
                    "reports": {"dir": str(tmp_path / "reports")},
                }
            )
        )
        fleet.start("beat-guard", queues="high,medium,low", concurrency=2)
        app = fleet.client_app()
        first = app.send_task("analysis.run", kwargs={"every": 3600}, queue="low")
        second = app.send_task("analysis.run", kwargs={"every": 3600}, queue="low")
        outcomes = [first.get(timeout=30), second.get(timeout=30)]
    assert sorted("skipped" in o for o in outcomes) == [False, True]
    assert redis_client.zcard(f"{namespace}runs:index") == 1


def test_a_high_priority_task_is_not_stuck_behind_a_10000_task_low_backlog(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    key = "backlog"
    with worker_fleet(redis_url, namespace, tmp_path) as fleet:
        app = fleet.client_app()
        with app.producer_or_acquire() as producer:
            for i in range(10_000):
                app.send_task(
                    "test.record",
                    args=[key, f"low{i}"],
                    kwargs={"seconds": 0.02},
                    queue="low",
                    producer=producer,
                )
        fleet.start("tiered", queues="high,medium,low", concurrency=1)
        deadline = time.monotonic() + 30
        while redis_client.llen(f"{namespace}{key}") < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        app.send_task("test.record", args=[key, "high"], queue="high")
        at_send = redis_client.llen(f"{namespace}{key}")
        while time.monotonic() < deadline + 30:
            done = [
                x.decode().split("@")[0] for x in redis_client.lrange(f"{namespace}{key}", 0, -1)
            ]
            if "high" in done:
                break
            time.sleep(0.05)
    position = done.index("high")
    waiting = 10_000 - position
    assert waiting > 9_000, "the backlog was still there when the high task ran"
    # at most the task running and the one message a prefetch-1 worker holds
    assert position - at_send <= 2, f"{position - at_send} low tasks ran after the high arrived"
