"""A waiter reports a chain whose stage group finished but whose next stage was never sent."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from celery import Celery, states
from celery.result import AsyncResult, GroupResult

from tasks import runs


@pytest.fixture
def app(redis_url: str, namespace: str) -> Iterator[Celery]:
    app = Celery("stalls", set_as_current=False, broker="memory://", backend=redis_url)
    app.conf.result_backend_transport_options = {"global_keyprefix": namespace}
    yield app
    app.close()


def finished_header_then_pending(app: Celery) -> tuple[AsyncResult, GroupResult]:
    """Return a chain's last result (pending) after a chord header whose tasks all succeeded."""
    members = [AsyncResult(str(uuid.uuid4()), app=app) for _ in range(2)]
    for member in members:
        app.backend.store_result(member.id, {"ok": True}, states.SUCCESS)
    header = GroupResult(str(uuid.uuid4()), members, app=app)
    return AsyncResult(str(uuid.uuid4()), parent=header, app=app), header


def chord_key(app: Celery, header: GroupResult, suffix: str) -> bytes:
    return bytes(app.backend.get_key_for_group(header.id, suffix))


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runs, "POLL_SECONDS", 0.01)
    monkeypatch.setattr(runs, "STALL_SECONDS", 0.2)


@pytest.mark.usefixtures("quick")
def test_a_chord_that_lost_its_count_is_reported_stopped(
    app: Celery, redis_client: redis.Redis
) -> None:
    final, header = finished_header_then_pending(app)
    # one of the two tasks counted itself; the other's count was lost with Redis
    redis_client.zadd(chord_key(app, header, ".j"), {"first": 0})
    stopped = runs._poll_chains(app.backend, [final], time.monotonic() + 5)
    assert list(stopped) == [final.id]
    assert stopped[final.id].startswith("stopped: the next stage after 2 finished tasks")


@pytest.mark.usefixtures("quick")
def test_a_completed_chord_waiting_for_a_worker_is_not_reported(
    app: Celery, redis_client: redis.Redis
) -> None:
    final, header = finished_header_then_pending(app)
    redis_client.set(chord_key(app, header, ".c"), "done")  # the next stage was sent
    assert runs._poll_chains(app.backend, [final], time.monotonic() + 1) == {}


def test_a_stall_counts_once_it_lasted_and_an_outage_restarts_it() -> None:
    now = [0.0]
    stalls = runs._Stalls(20, clock=lambda: now[0])
    assert stalls.check("c", "stopped") is None
    now[0] = 19
    assert stalls.check("c", "stopped") is None
    stalls.reset()
    now[0] = 30
    assert stalls.check("c", "stopped") is None
    now[0] = 50
    assert stalls.check("c", "stopped") == "stopped"
    assert stalls.check("c", None) is None and stalls.since == {}
