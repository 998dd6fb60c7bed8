"""A failed stage's record, and the errback every stage of a symbol's chain carries."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from celery.exceptions import Retry

from core.errors import InvalidRequestError
from core.keys import KeySpace
from tasks import failures


class FakeRuntime:
    """The two services the failure record uses, on the test's Redis namespace."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client, self.keys = client, KeySpace(namespace)

    def redis_client(self) -> redis.Redis:
        return self.client

    def keyspace(self) -> KeySpace:
        return self.keys


def test_an_error_is_one_line_naming_the_stage_class_and_message() -> None:
    error = InvalidRequestError("binance has no market 'FOO/BAR'\n  at line 2\t(details)")
    record = failures.describe("market.snapshot", error)
    assert failures.line(record) == (
        "failed in market.snapshot: InvalidRequestError: "
        "binance has no market 'FOO/BAR' at line 2 (details)"
    )
    long = failures.describe("news.collect", ValueError("x" * 1000))
    assert len(long["message"]) == failures.MAX_MESSAGE and long["message"].endswith("...")


def test_the_first_error_of_a_run_wins(redis_client: redis.Redis, namespace: str) -> None:
    rt: Any = FakeRuntime(redis_client, namespace)
    with (
        pytest.raises(InvalidRequestError),
        failures.recorded(rt, "r1", "binance", "FOO/BAR", "market.snapshot"),
    ):
        raise InvalidRequestError("binance has no market 'FOO/BAR'")
    # a later failure of the same run (the other header task, Celery's cascade) keeps it
    later = failures.record(rt, "r1", "binance", "FOO/BAR", "analysis.case", exc=KeyError("x"))
    assert later == {
        "stage": "market.snapshot",
        "error": "InvalidRequestError",
        "message": "binance has no market 'FOO/BAR'",
    }
    assert redis_client.ttl(f"{namespace}run:r1:binance:FOOBAR:error") > 0
    assert failures.recorded_error(rt, "r2", "binance", "FOO/BAR") is None


def test_celery_control_flow_is_not_an_error(redis_client: redis.Redis, namespace: str) -> None:
    rt: Any = FakeRuntime(redis_client, namespace)
    with pytest.raises(Retry), failures.recorded(rt, "r1", "binance", "BTC/USDT", "news.collect"):
        raise Retry()
    assert failures.recorded_error(rt, "r1", "binance", "BTC/USDT") is None


def test_every_stage_of_a_symbol_chain_ends_the_chain_when_it_fails() -> None:
    from celery.contrib.testing.app import TestApp, setup_default_app

    from tasks.runs import symbol_chain

    # an in-memory app: the fleet's would read the config and find (or start) a Redis
    app = TestApp(set_as_current=False)
    with setup_default_app(app):
        app.set_current()
        canvas = symbol_chain("r1", "binance", "BTC/USDT", "2025-01-01T00:00:00+00:00")
    # group -> group -> decide -> execute is a chord whose body is a chord
    inner = canvas.body
    stages = [*canvas.tasks, *inner.tasks, *inner.body.tasks]
    names = [s.task for s in stages]
    assert names == [
        "news.collect",
        "market.snapshot",
        "analysis.case",
        "analysis.case",
        "strategy.decide",
        "execution.execute",
    ]
    final_id = stages[-1].options["task_id"]
    for stage in stages:
        (errback,) = stage.options["link_error"]
        assert errback["task"] == "analysis.failed"
        assert errback["kwargs"]["final_id"] == final_id
        assert errback["kwargs"]["symbol"] == "BTC/USDT"
