"""The LLM's real cost end to end: the adapter over HTTP, a worker's run, its report, status.

The test server (tests/integration/fake_openai.py) reports honest ``usage`` on every answer:
one token per 4 characters of the messages it got and of the answer it gave.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from prometheus_client import REGISTRY

from agents.llm import CaseAnswer, LLMError
from core import events
from core.keys import KeySpace
from llm import usage
from llm.usage import RedisUsage, Usage
from monitoring import metrics
from tests.conftest import REPO_ROOT
from tests.integration.fake_openai import Behaviour, FakeOpenAI, tokens
from tests.integration.test_llm import GOOD, make, run_one_cycle

pytestmark = pytest.mark.integration

HOLD = {
    "action": "hold",
    "confidence": 0.4,
    "stop_loss": None,
    "take_profit": None,
    "horizon": "1d",
    "rationale": "the cases cancel out",
}


ANSWERS = {"CaseAnswer": GOOD, "PlanAnswer": HOLD}


def _schema(body: dict[str, Any]) -> str:
    return str((body.get("response_format") or {}).get("json_schema", {}).get("name", ""))


def reported(body: dict[str, Any], behaviour: Behaviour) -> tuple[int, int]:
    """Return the usage the test server reports for a request it answered: prompt, completion."""
    said = "".join(str(m.get("content", "")) for m in body["messages"])
    answer = behaviour.by_schema.get(_schema(body), behaviour.content)
    return tokens(said), tokens(json.dumps(answer))


@pytest.fixture
def store(redis_client: redis.Redis, namespace: str) -> Iterator[RedisUsage]:
    """Count into the test's Redis namespace, as a worker process does."""
    installed = RedisUsage(redis_client, KeySpace(namespace))
    usage.install(installed)
    yield installed
    usage.install(None)


def test_the_adapter_records_the_servers_usage_per_stage_and_day(
    store: RedisUsage, redis_client: redis.Redis, namespace: str
) -> None:
    with FakeOpenAI() as server:
        server.behaviour.content = GOOD
        llm = make(server, redis_client, namespace, model="usage-model", price_per_1k_tokens=2.0)

        async def two_calls() -> None:
            with usage.stage_scope("r1", "binance", "BTC/USDT", "long"):
                await llm.complete(CaseAnswer, "system text", "DATA")
                server.behaviour.mode = "429"  # an error: the server reports no usage
                with pytest.raises(LLMError):
                    await llm.complete(CaseAnswer, "system text", "DATA")

        events.subscribe(metrics.on_event)
        try:
            asyncio.run(two_calls())
        finally:
            events.unsubscribe(metrics.on_event)
        server.behaviour.mode = "ok"
        prompt, completion = reported(server.behaviour.requests[0], server.behaviour)

    assert prompt > 0 and completion == tokens(json.dumps(GOOD))
    long = store.stages("r1", "binance", "BTC/USDT")["long"]
    assert (long.calls, long.failed, long.unmetered) == (2, 1, 1)
    assert (long.prompt_tokens, long.completion_tokens) == (prompt, completion)
    assert long.cost == pytest.approx((prompt + completion) * 2.0 / 1000)
    assert store.day().tokens == prompt + completion and store.run("r1").calls == 2

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"model": "usage-model", **labels}) or 0.0

    assert sample("crypto_ai_llm_tokens_total", kind="prompt") == prompt
    assert sample("crypto_ai_llm_tokens_total", kind="completion") == completion
    assert sample("crypto_ai_llm_calls_total", outcome="ok") == 1
    assert sample("crypto_ai_llm_call_seconds_count", outcome="ok") == 1


def status_text(redis_url: str, namespace: str, config: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTO_AI")}
    env.update({"REDIS_URL": redis_url, "CRYPTO_AI__REDIS__KEY_PREFIX": namespace})
    shown = subprocess.run(
        [sys.executable, "-m", "workers.cli", "status", "--config", str(config)],
        cwd=REPO_ROOT,
        env={**env, "PYTHONPATH": str(REPO_ROOT), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return shown.stdout


def test_a_run_reports_its_llm_usage_per_agent_and_status_shows_the_day(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    llm: dict[str, Any] = {"price_per_1k_tokens": 1.0, "budget_per_day": 1_000_000}
    with FakeOpenAI() as server:
        server.behaviour.by_schema = ANSWERS
        report = run_one_cycle(redis_url, namespace, redis_client, tmp_path, server, **llm)
        requests = server.behaviour.requests
        # the answers of the schemas the test set (the other, the news stage's sentiment, is
        # answered "{}", which fails its schema)
        fitting = [reported(b, server.behaviour) for b in requests if _schema(b) in ANSWERS]

    stages = report["llm_usage"]["stages"]
    assert {"long", "short", "strategy"} <= set(stages)
    for name, answer in (("long", GOOD), ("short", GOOD), ("strategy", HOLD)):
        calls, prompt = stages[name]["calls"], stages[name]["prompt_tokens"]
        assert calls >= 1 and prompt > 0, name
        assert stages[name]["completion_tokens"] == calls * tokens(json.dumps(answer)), name
        priced = (prompt + stages[name]["completion_tokens"]) / 1000
        assert stages[name]["cost"] == pytest.approx(priced), name
    symbol = report["llm_usage"]["symbol"]
    assert symbol["calls"] == sum(s["calls"] for s in stages.values())
    assert report["llm_usage"]["run"]["tokens"] == symbol["tokens"]
    page = report["page"]
    assert "## LLM usage" in page
    assert f"| long case | {stages['long']['calls']} | " in page
    assert f"| **this symbol** | {symbol['calls']} | " in page

    day = RedisUsage(redis_client, KeySpace(namespace)).day()
    assert day.calls == len(requests)  # every request the server saw, the news stage's too
    assert day.prompt_tokens >= sum(p for p, _ in fitting) > 0
    assert day.completion_tokens >= sum(c for _, c in fitting) > 0
    config = tmp_path / "status.yaml"
    config.write_text(yaml.safe_dump({"llm": llm}))
    shown = status_text(redis_url, namespace, config)
    left = 1_000_000 - day.tokens
    assert f"LLM today (UTC): {day.calls} calls" in shown
    assert f"{day.prompt_tokens:,} prompt + {day.completion_tokens:,} completion tokens" in shown
    assert f"budget 1,000,000 tokens, {left:,} left" in shown


def test_with_the_days_budget_spent_the_agents_fall_to_rules_and_say_why(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    earlier = usage.Call("local", "json_schema", "ok", 800, 200, 1.0, None)
    RedisUsage(redis_client, KeySpace(namespace)).add(earlier, None)  # spent earlier today
    with FakeOpenAI() as server:
        server.behaviour.by_schema = ANSWERS
        report = run_one_cycle(
            redis_url, namespace, redis_client, tmp_path, server, budget_per_day=1000
        )
        sent = list(server.behaviour.requests)
    assert sent == [], "no LLM call is made once the day's budget is spent"
    spent = (
        "llm budget exhausted: LLMBudgetError: llm.budget_per_day is spent: "
        "1,000 of 1,000 tokens used today (UTC)"
    )
    for stage in ("long", "short", "plan"):
        assert report[stage]["rung"] == "rules", stage
        assert report[stage]["fallback_reason"].startswith(spent), report[stage]
    assert report["llm_usage"]["symbol"] == {**Usage().as_dict()}
    assert "No LLM calls for this symbol." in report["page"]
