"""A waiter reports a chain whose stage can no longer run, naming the stage.

Real Redis as broker and result backend (no worker): a stage's message is put on its queue
with ``send_task``, moved to the unacked set as a worker's fetch does, or deleted, and the
waiter's poll (``tasks.runs._poll_chains``) is asked what it sees.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from celery import Celery, states
from celery.result import AsyncResult, GroupResult

from tasks import runs, stalls
from tasks.routing import TierRouter

IDS = {"run_id": "r1", "exchange": "binance", "symbol": "BTC/USDT"}


@pytest.fixture
def app(redis_url: str, namespace: str) -> Iterator[Celery]:
    app = Celery("stalls", set_as_current=False, broker=redis_url, backend=redis_url)
    app.conf.broker_transport_options = {"global_keyprefix": namespace}
    app.conf.result_backend_transport_options = {"global_keyprefix": namespace}
    app.conf.task_routes = (TierRouter(),)
    yield app
    app.close()


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runs, "POLL_SECONDS", 0.01)
    monkeypatch.setattr(runs, "STALL_SECONDS", 0.2)
    monkeypatch.setattr(stalls, "HOLDERS_SECONDS", 0.1)


class Chain:
    """The result tree a waiter restores for one symbol: stage by stage, as symbol_chain."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.news, self.snapshot, self.long, self.short, self.decide, self.execute = (
            AsyncResult(str(uuid.uuid4()), app=app) for _ in range(6)
        )
        first = GroupResult(str(uuid.uuid4()), [self.news, self.snapshot], app=app)
        cases = GroupResult(str(uuid.uuid4()), [self.long, self.short], parent=first, app=app)
        self.decide.parent = cases
        self.execute.parent = self.decide
        self.final = self.execute
        runs.release(self.final)  # a GroupResult subscribes to its members: not needed here

    def succeed(self, *results: AsyncResult) -> None:
        for result in results:
            self.app.backend.store_result(result.id, {"ok": True}, states.SUCCESS)

    def send(self, result: AsyncResult, name: str) -> None:
        """Publish the task's message on its queue, as the stage before it does."""
        # ignore_result: this process never subscribes to it (no worker will answer here)
        self.app.send_task(name, kwargs=IDS, task_id=result.id, ignore_result=True)


def poll(app: Celery, chain: Chain, seconds: float = 1.0) -> dict[str, str]:
    return runs._poll_chains(app.backend, [chain.final], time.monotonic() + seconds)


def test_the_strategy_stage_is_reported_once_its_message_is_lost(
    app: Celery, redis_client: redis.Redis, namespace: str
) -> None:
    chain = Chain(app)
    chain.succeed(chain.news, chain.snapshot, chain.long, chain.short)
    chain.send(chain.decide, "strategy.decide")
    assert poll(app, chain) == {}  # queued: waiting for a worker, however long
    redis_client.delete(f"{namespace}medium")  # lost with Redis
    stopped = poll(app, chain, 5)
    assert list(stopped) == [chain.final.id]
    assert stopped[chain.final.id].startswith(
        "stopped in strategy.decide: its message is in no queue and no worker holds it"
    )


def test_the_execution_stage_is_reported_when_its_message_never_arrived(app: Celery) -> None:
    chain = Chain(app)
    chain.succeed(chain.news, chain.snapshot, chain.long, chain.short, chain.decide)
    stopped = poll(app, chain, 5)
    assert stopped[chain.final.id].startswith("stopped in execution.execute: its message")


def test_an_analyst_whose_message_was_lost_is_named_by_its_side(app: Celery) -> None:
    chain = Chain(app)
    chain.succeed(chain.news, chain.snapshot, chain.long)
    stopped = poll(app, chain, 5)
    assert stopped[chain.final.id].startswith("stopped in analysis.case short: its message")


def test_a_message_fetched_by_a_worker_that_died_is_reported_as_such(
    app: Celery, redis_client: redis.Redis, namespace: str
) -> None:
    chain = Chain(app)
    chain.succeed(chain.news, chain.snapshot, chain.long, chain.short)
    chain.send(chain.decide, "strategy.decide")
    # what kombu does when a worker fetches a message with late acknowledgement
    raw = redis_client.rpop(f"{namespace}medium")
    assert raw is not None
    redis_client.hset(
        f"{namespace}unacked", "tag-1", json.dumps([json.loads(raw), "medium", "medium"])
    )
    redis_client.zadd(f"{namespace}unacked_index", {"tag-1": time.time()})
    stopped = poll(app, chain, 5)
    assert stopped[chain.final.id].startswith(
        "stopped in strategy.decide: a worker fetched its message and no live worker holds it"
    )


def test_a_stage_started_on_a_worker_that_is_gone_names_the_worker(app: Celery) -> None:
    chain = Chain(app)
    chain.succeed(chain.news, chain.snapshot, chain.long, chain.short)
    app.backend.store_result(chain.decide.id, {"pid": 1, "hostname": "medium@gone"}, states.STARTED)
    stopped = poll(app, chain, 5)
    assert stopped[chain.final.id].startswith(
        "stopped in strategy.decide: it started on medium@gone, which no longer holds it"
    )


def test_a_failed_stage_is_reported_as_before(app: Celery) -> None:
    chain = Chain(app)
    chain.succeed(chain.news)
    app.backend.store_result(chain.snapshot.id, ValueError("no market"), states.FAILURE)
    stopped = poll(app, chain, 5)
    assert stopped[chain.final.id] == "stopped: failure stage (ValueError: no market)"


def test_the_stage_names_follow_the_chain_a_run_publishes() -> None:
    canvas = runs.symbol_chain("r1", "binance", "BTC/USDT", "2024-01-01T00:00:00+00:00")
    first, cases, rest = canvas.tasks, canvas.body.tasks, canvas.body.body.tasks
    published = [
        [t.task for t in first],
        [f"{t.task} {t.kwargs['side']}" for t in cases],
        *[[t.task] for t in rest],
    ]
    assert published == [list(stage) for stage in runs.CHAIN_STAGES]


class FakeLocator:
    """Where tasks are, as a test says: queued ids, fetched ids, and who holds what."""

    def __init__(self) -> None:
        self.queued_ids: set[str] = set()
        self.fetched_ids: set[str] = set()
        self.held: dict[str, str] | None = {}
        self.asked = 0

    def queued(self, tasks: list[stalls.Waiting]) -> set[str]:
        return {t.id for t in tasks} & self.queued_ids

    def fetched(self) -> set[str]:
        return set(self.fetched_ids)

    def holders(self, ids: list[str]) -> dict[str, str] | None:
        self.asked += 1
        return None if self.held is None else {i: w for i, w in self.held.items() if i in ids}


def waiting(task_id: str = "t1", state: str = states.PENDING) -> list[stalls.Waiting]:
    return [stalls.Waiting(task_id, "strategy.decide", "medium", state)]


def test_a_stage_a_live_worker_holds_is_never_reported_and_asked_about_once_a_bound() -> None:
    now = [0.0]
    locator = FakeLocator()
    locator.held = {"t1": "medium@host"}
    watch = stalls.Watch(locator, 20, clock=lambda: now[0])
    for second in range(0, 100, 2):
        now[0] = second
        assert watch.check({"c": waiting(state=states.STARTED)}) == {}
    assert locator.asked == 4  # at 20, 40, 60 and 80: once a bound after the last answer


def test_a_stall_is_reported_after_two_unanswered_askings_and_an_outage_restarts_it() -> None:
    now = [0.0]
    locator = FakeLocator()
    watch = stalls.Watch(locator, 20, clock=lambda: now[0])
    assert watch.check({"c": waiting()}) == {}
    now[0] = 19
    assert watch.check({"c": waiting()}) == {}
    watch.reset()  # Redis was away: the time it stood does not count
    now[0] = 30
    assert watch.check({"c": waiting()}) == {}
    now[0] = 50
    assert watch.check({"c": waiting()}) == {}  # first asking: nobody holds it
    now[0] = 52
    assert list(watch.check({"c": waiting()})) == ["c"]  # asked again: still nobody


def test_no_answer_from_the_workers_is_not_taken_for_a_stall() -> None:
    now = [0.0]
    locator = FakeLocator()
    locator.held = None  # the broadcast itself failed
    watch = stalls.Watch(locator, 20, clock=lambda: now[0])
    for second in range(0, 100, 2):
        now[0] = second
        assert watch.check({"c": waiting()}) == {}


def test_a_queued_stage_never_stalls_and_asks_nobody() -> None:
    now = [0.0]
    locator = FakeLocator()
    locator.queued_ids = {"t1"}
    watch = stalls.Watch(locator, 20, clock=lambda: now[0])
    for second in range(0, 100, 2):
        now[0] = second
        assert watch.check({"c": waiting()}) == {}
    assert locator.asked == 0
