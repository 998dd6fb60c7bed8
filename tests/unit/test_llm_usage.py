"""The LLM's real usage: counted per call, stage, run and UTC day; the daily budget; metrics.

The store contract runs against both stores (this process's memory, the fleet's Redis);
the budget and the tallies that cross processes run on the real Redis.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from prometheus_client import REGISTRY
from pydantic import ValidationError

from agents.llm import LLMBudgetError
from core.config import AppConfig, LLMConfig
from core.keys import KeySpace
from llm import usage
from llm.usage import MemoryUsage, RedisUsage, Usage, UsageStore
from monitoring import metrics
from tasks import reports
from workers.status import llm_line, llm_today

DAY = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
NEXT_DAY = DAY + 2 * 3600


class Clock:
    """A settable clock for the stores' day."""

    def __init__(self, now: float = DAY) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def keys(namespace: str) -> KeySpace:
    return KeySpace(namespace)


@pytest.fixture(params=["memory", "redis"])
def make_store(
    request: pytest.FixtureRequest, redis_client: redis.Redis, keys: KeySpace
) -> Callable[[Clock], UsageStore]:
    """Return a builder of the store under test (the contract holds for both)."""
    if request.param == "memory":
        return MemoryUsage
    return lambda clock: RedisUsage(redis_client, keys, clock)


@pytest.fixture
def installed(redis_client: redis.Redis, keys: KeySpace) -> Iterator[RedisUsage]:
    """Install a Redis store for record_call and check_daily_budget, as a worker does."""
    store = RedisUsage(lambda: redis_client, lambda: keys)
    usage.install(store)
    yield store
    usage.install(None)


def record(
    config: LLMConfig | None = None,
    prompt: int | None = 50,
    completion: int | None = 20,
    outcome: str = "ok",
    model: str = "test-model",
    seconds: float = 0.5,
) -> None:
    usage.record_call(
        config or LLMConfig(),
        model=model,
        method="json_schema",
        prompt_tokens=prompt,
        completion_tokens=completion,
        seconds=seconds,
        outcome=outcome,
    )


def call(prompt: int | None = 50, completion: int | None = 20, outcome: str = "ok") -> usage.Call:
    cost = None if prompt is None else (prompt + 2 * (completion or 0)) / 1000
    return usage.Call("m", "json_schema", outcome, prompt, completion, 0.25, cost)


def test_a_store_adds_calls_up_per_day_stage_and_run(
    make_store: Callable[[Clock], UsageStore],
) -> None:
    clock = Clock()
    store = make_store(clock)
    long = usage.StageRef("r1", "binance", "BTC/USDT", "long")
    strategy = usage.StageRef("r1", "binance", "BTC/USDT", "strategy")
    other_symbol = usage.StageRef("r1", "binance", "ETH/USDT", "long")
    store.add(call(), long)
    store.add(call(), long)
    store.add(call(None, None, outcome="LLMTimeoutError"), strategy)
    store.add(call(10, 5), other_symbol)
    store.add(call(1000, 1000), None)  # outside any run: the day only

    assert store.day() == Usage(
        calls=5,
        failed=1,
        unmetered=1,
        prompt_tokens=1110,
        completion_tokens=1045,
        seconds=1.25,
        cost=pytest.approx(2 * 0.09 + 0.02 + 3.0),  # type: ignore[arg-type]
    )
    stages = store.stages("r1", "binance", "BTC/USDT")
    assert set(stages) == {"long", "strategy"}
    assert (stages["long"].calls, stages["long"].tokens) == (2, 140)
    assert stages["strategy"] == Usage(calls=1, failed=1, unmetered=1, seconds=0.25)
    assert store.run("r1").calls == 4 and store.run("r1").tokens == 155
    assert store.run("another run") == Usage()

    clock.now = NEXT_DAY  # a new UTC day starts from nothing; yesterday's stays readable
    assert store.day() == Usage()
    assert store.day("2023-11-14").calls == 5


def test_redis_counters_expire(redis_client: redis.Redis, keys: KeySpace) -> None:
    store = RedisUsage(redis_client, keys, Clock())
    store.add(call(), usage.StageRef("r1", "binance", "BTC/USDT", "long"))
    day_ttl = redis_client.ttl(keys.llm_usage_day("2023-11-14"))
    assert 3 * 86400 < day_ttl <= usage.DAY_TTL  # type: ignore[operator]
    for key in (keys.stage("r1", "binance", "BTC/USDT", "llm"), keys.llm_usage_run("r1")):
        assert 0 < redis_client.ttl(key) <= usage.RUN_TTL  # type: ignore[operator]


def test_record_call_counts_real_usage_in_the_open_stage(installed: RedisUsage) -> None:
    config = LLMConfig(price_per_1k_tokens=0.5, price_per_1k_completion_tokens=1.5)
    with usage.stage_scope("r2", "okx", "SOL/USDT", "short"):
        record(config)
        record(config, prompt=None, completion=None, outcome="LLMUnavailableError")
    record(config)  # after the stage: the day's, not the run's

    short = installed.stages("r2", "okx", "SOL/USDT")["short"]
    assert (short.calls, short.failed, short.unmetered) == (2, 1, 1)
    assert (short.prompt_tokens, short.completion_tokens) == (50, 20)
    assert short.cost == pytest.approx((50 * 0.5 + 20 * 1.5) / 1000)
    assert installed.day().calls == 3 and installed.day().tokens == 140
    assert installed.run("r2").calls == 2


def test_no_price_means_no_cost_and_a_completion_price_needs_the_prompt_one() -> None:
    assert usage.call_cost(LLMConfig(), 1000, 1000) is None
    assert usage.call_cost(LLMConfig(price_per_1k_tokens=2.0), 500, 250) == pytest.approx(1.5)
    with pytest.raises(ValidationError, match="price_per_1k_completion_tokens needs"):
        LLMConfig(price_per_1k_completion_tokens=1.0)


def test_the_daily_budget_is_fleet_wide_and_stops_calls_when_spent(
    installed: RedisUsage, redis_client: redis.Redis, keys: KeySpace
) -> None:
    config = LLMConfig(budget_per_day=150)
    usage.check_daily_budget(config)
    record(config)  # 70 tokens
    # another worker process: its own client and store, the same Redis
    other = RedisUsage(redis.Redis(connection_pool=redis_client.connection_pool), keys)
    other.add(call(), None)
    usage.check_daily_budget(config)  # 140 of 150: still open
    other.add(call(5, 5), None)

    with pytest.raises(LLMBudgetError) as refused:
        usage.check_daily_budget(config)
    assert str(refused.value) == (
        "llm.budget_per_day is spent: 150 of 150 tokens used today (UTC); "
        "the rules answer until 00:00 UTC"
    )
    usage.check_daily_budget(LLMConfig())  # no budget: never refused


def test_failed_calls_without_usage_do_not_spend_the_budget(installed: RedisUsage) -> None:
    config = LLMConfig(budget_per_day=100)
    for _ in range(12):  # twelve HTTP 500s: the server reported no tokens
        record(config, prompt=None, completion=None, outcome="LLMUnavailableError")
    usage.check_daily_budget(config)
    assert installed.day() == Usage(calls=12, failed=12, unmetered=12, seconds=6.0)


def test_an_unreachable_redis_never_breaks_a_call_but_refuses_a_budget(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = redis.Redis(port=1, socket_connect_timeout=0.2)  # nothing listens on port 1
    usage.install(RedisUsage(dead, KeySpace("unused:")))
    seen: list[dict[str, Any]] = []
    from core import events

    def listener(event: str, fields: Any) -> None:
        if event == "llm.usage":
            seen.append(dict(fields))

    events.subscribe(listener)
    try:
        record()  # no exception: the call it records already happened
        usage.check_daily_budget(LLMConfig())  # no budget: Redis is not even asked
        with pytest.raises(LLMBudgetError, match="the day's LLM spend cannot be read"):
            usage.check_daily_budget(LLMConfig(budget_per_day=1000))
    finally:
        events.unsubscribe(listener)
        usage.install(None)
    assert "the usage of an LLM call (test-model) was not recorded" in caplog.text
    assert seen and seen[0]["prompt_tokens"] == 50  # the metrics still hear of it


def test_without_an_installed_store_a_process_counts_its_own() -> None:
    usage.install(None)
    before = usage.store().day().calls
    record(LLMConfig())
    assert usage.store().day().calls == before + 1
    assert isinstance(usage.store(), MemoryUsage)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_metrics_count_the_reported_tokens_latency_and_outcome() -> None:
    from core import events

    model = "metrics-test-model"
    events.subscribe(metrics.on_event)
    try:
        record(LLMConfig(price_per_1k_tokens=1.0), model=model, seconds=0.4)
        record(model=model, prompt=None, completion=None, outcome="LLMTimeoutError", seconds=30)
    finally:
        events.unsubscribe(metrics.on_event)
    tokens = "crypto_ai_llm_tokens_total"
    assert sample(tokens, model=model, kind="prompt") == 50
    assert sample(tokens, model=model, kind="completion") == 20
    assert sample("crypto_ai_llm_calls_total", model=model, outcome="ok") == 1
    assert sample("crypto_ai_llm_calls_total", model=model, outcome="LLMTimeoutError") == 1
    seconds = "crypto_ai_llm_call_seconds"
    assert sample(f"{seconds}_sum", model=model, outcome="ok") == pytest.approx(0.4)
    assert sample(f"{seconds}_bucket", model=model, outcome="ok", le="0.5") == 1
    assert sample(f"{seconds}_count", model=model, outcome="LLMTimeoutError") == 1
    assert sample("crypto_ai_llm_cost_total", model=model) == pytest.approx(0.07)


def test_status_shows_todays_tokens_calls_cost_and_budget_left(
    installed: RedisUsage, redis_client: redis.Redis, keys: KeySpace
) -> None:
    config = AppConfig.model_validate(
        {"llm": {"budget_per_day": 10_000, "price_per_1k_tokens": 0.002}}
    )
    assert llm_line(llm_today(redis_client, keys, config)) == (
        "LLM today (UTC): no calls; budget 10,000 tokens, 10,000 left"
    )
    record(config.llm, prompt=1200, completion=300, seconds=1.0)
    record(config.llm, prompt=None, completion=None, outcome="LLMTimeoutError", seconds=3.0)
    today = llm_today(redis_client, keys, config)
    assert (today["calls"], today["tokens"], today["budget_left"]) == (2, 1500, 8500)
    assert llm_line(today) == (
        "LLM today (UTC): 2 calls (1 failed), 1,200 prompt + 300 completion tokens, "
        "2.00s per call, 1 without reported usage, cost 0.0030; "
        "budget 10,000 tokens, 8,500 left"
    )


class ReportRuntime:
    """What reports.llm_usage uses of a worker's runtime: its Redis and key builder."""

    def __init__(self, client: redis.Redis, keys: KeySpace) -> None:
        self.client, self.keys = client, keys

    def redis_client(self) -> redis.Redis:
        return self.client

    def keyspace(self) -> KeySpace:
        return self.keys


def test_the_report_shows_usage_per_stage_for_the_symbol_and_the_run(
    installed: RedisUsage, redis_client: redis.Redis, keys: KeySpace
) -> None:
    config = LLMConfig(price_per_1k_tokens=1.0)
    for stage in ("long", "short", "strategy"):
        with usage.stage_scope("r3", "binance", "BTC/USDT", stage):
            record(config, seconds=0.25)
    with usage.stage_scope("r3", "binance", "ETH/USDT", "long"):
        record(config, prompt=100, completion=0)

    found = reports.llm_usage(
        ReportRuntime(redis_client, keys),  # type: ignore[arg-type]
        "r3",
        "binance",
        "BTC/USDT",
    )
    assert list(found["stages"]) == ["long", "short", "strategy"]
    assert found["symbol"]["calls"] == 3 and found["symbol"]["tokens"] == 210
    assert found["run"]["calls"] == 4 and found["run"]["prompt_tokens"] == 250

    page = "\n".join(reports._usage_lines(found))
    assert "| long case | 1 | 0 | 50 | 20 | 0.25 | 0.07 |" in page
    assert "| **this symbol** | 3 | 0 | 150 | 60 | 0.75 | 0.21 |" in page
    assert "The whole run so far: 4 calls, 250 prompt + 60 completion tokens, cost 0.31." in page
    empty = reports.llm_usage(
        ReportRuntime(redis_client, keys),  # type: ignore[arg-type]
        "r3",
        "binance",
        "SOL/USDT",
    )
    assert "No LLM calls for this symbol." in reports._usage_lines(empty)


def test_a_workers_first_task_makes_its_process_count_in_the_fleets_redis(
    redis_client: redis.Redis, keys: KeySpace
) -> None:
    from tasks import context

    saved = list(context._installed)
    usage.install(None)
    try:
        context.install(ReportRuntime(redis_client, keys))  # type: ignore[arg-type]
        assert isinstance(usage.store(), MemoryUsage), "importing the app connects nothing"
        context.current()  # what every task does first
        record()
        assert RedisUsage(redis_client, keys).day().tokens == 70
    finally:
        context._installed[:] = saved
        context._counting.clear()
        usage.install(None)
