"""A real ``celery -A workers worker`` process on a real Redis: queues, redelivery, priority."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis

from core.config import PRIORITY_QUEUES
from tests.integration.workers import worker_fleet

pytestmark = pytest.mark.integration


def _wait_for(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_worker_consumes_a_task_sent_to_each_queue(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with worker_fleet(redis_url, namespace, tmp_path) as fleet:
        fleet.start("all", queues="high,medium,low")
        app = fleet.client_app()
        results = {
            q: app.send_task("health.ping", kwargs={"sent_at": time.time()}, queue=q)
            for q in PRIORITY_QUEUES
        }
        answers = {q: r.get(timeout=20) for q, r in results.items()}
        alerts = app.send_task("monitor.alerts").get(timeout=20)

    assert alerts == [], "no traffic, no alert"
    assert "exchange clients ready" in (tmp_path / "all.log").read_text(), "worker_process_init"
    logged = [json.loads(x) for x in redis_client.lrange(f"{namespace}logs:system", 0, -1)]
    assert any("health.ping" in entry["message"] for entry in logged), "the Redis log copy"
    for queue, answer in answers.items():
        assert answer["queue"] == queue
        assert answer["worker"].startswith("all@")
        recorded = redis_client.hgetall(f"{namespace}fleet:health:{queue}")
        assert recorded[b"worker"].decode() == answer["worker"]


def test_task_of_a_sigkilled_worker_is_redelivered_to_another_worker(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    # A short visibility timeout so the abandoned message comes back within seconds; the
    # production default (3600 s) is discussed in celeryconfig.py and the README.
    overrides = {
        "CRYPTO_AI__CELERY__VISIBILITY_TIMEOUT": 4,
        "CRYPTO_AI__CELERY__MAX_COUNTDOWN": 0,
        "CRYPTO_AI__CELERY__TASK_TIME_LIMIT": 3,
        "CRYPTO_AI__CELERY__TASK_SOFT_TIME_LIMIT": 2,
        "CRYPTO_AI__CELERY__UNACKED_RESTORE_INTERVAL": 1,
        # the config wants room for an order request after the time limit
        "CRYPTO_AI__PERFORMANCE__CONNECTION_POOLING__CONNECTION_TIMEOUT": 0.2,
        "CRYPTO_AI__PERFORMANCE__CONNECTION_POOLING__READ_TIMEOUT": 0.5,
    }
    key = "redelivery"
    with worker_fleet(redis_url, namespace, tmp_path, **overrides) as fleet:
        victim = fleet.start("victim", queues="medium")
        app = fleet.client_app()
        app.send_task("test.record", args=[key, "job"], kwargs={"seconds": 1.5}, queue="medium")
        started = f"{namespace}{key}:started"
        _wait_for(lambda: redis_client.llen(started) == 1, 20, "the task to start on victim")
        victim.kill()
        assert redis_client.llen(f"{namespace}{key}") == 0, "task finished before the kill"

        fleet.start("rescuer", queues="medium")
        done = _wait_for(lambda: redis_client.lrange(f"{namespace}{key}", 0, -1), 30, "redelivery")

    runs = [entry.decode() for entry in redis_client.lrange(started, 0, -1)]
    assert runs[0].startswith("job@victim@")
    assert runs[1].startswith("job@rescuer@")
    assert [d.decode().split("@")[1] for d in done] == ["rescuer"]


def test_high_priority_task_runs_before_a_waiting_low_backlog(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    key = "order"
    with worker_fleet(redis_url, namespace, tmp_path) as fleet:
        app = fleet.client_app()
        for i in range(30):
            app.send_task("test.record", args=[key, f"low{i}"], queue="low")
        app.send_task("test.record", args=[key, "high"], queue="high")
        fleet.start("tiered", queues="high,medium,low")
        _wait_for(lambda: redis_client.llen(f"{namespace}{key}") == 31, 60, "all 31 tasks")

    order = [
        entry.decode().split("@")[0] for entry in redis_client.lrange(f"{namespace}{key}", 0, -1)
    ]
    assert order.index("high") == 0, order
