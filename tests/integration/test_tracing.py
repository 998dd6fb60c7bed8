"""One analysis run is one trace across the worker processes (OpenTelemetry, file exporter)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.integration.sandbox_fixtures import admin, running_sandbox
from tests.integration.test_agents_cycle import analyse, uptrend, write_config
from tests.integration.workers import worker_fleet

pytestmark = pytest.mark.integration


def spans_in(directory: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for f in directory.glob("spans-*.jsonl")
        for line in f.read_text().splitlines()
    ]


def test_one_run_is_one_trace_across_processes(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    traces = tmp_path / "traces"
    secret = "c2FuZGJveC1zZWNyZXRz"
    with running_sandbox(
        starting_balances={"USDT": 10000},
        candles_file=str(uptrend(tmp_path)),
        history_days=5,
        symbols=["BTC/USDT", "ETH/USDT"],
    ) as sb:
        config = write_config(
            tmp_path,
            sb.url,
            ["BTC/USDT", "ETH/USDT"],
            tracing={"exporter": "file", "dir": str(traces)},
        )
        with worker_fleet(
            redis_url,
            namespace,
            tmp_path,
            config=config,
            BINANCE_API_KEY="sandbox-key",
            BINANCE_API_SECRET=secret,
        ) as fleet:
            fleet.start("traced-a", concurrency=1)
            fleet.start("traced-b", concurrency=1)
            run = analyse(fleet.env(), config)
            output, _ = run.communicate(timeout=180)
    assert run.returncode == 0, output
    spans = spans_in(traces)
    roots = [s for s in spans if s["name"] == "analysis.run"]
    assert len(roots) == 1
    trace_id, root_id = roots[0]["trace_id"], roots[0]["span_id"]
    assert {s["trace_id"] for s in spans} == {trace_id}, "every span belongs to the run's trace"
    by_id = {s["span_id"]: s for s in spans}
    agents = [s for s in spans if s["name"].startswith("agent.")]
    assert sorted({s["name"] for s in agents}) == [
        "agent.execution",
        "agent.long",
        "agent.market",
        "agent.news",
        "agent.short",
        "agent.strategy",
    ]
    assert all(s["parent_id"] == root_id for s in agents)
    assert len({s["pid"] for s in agents} - {roots[0]["pid"]}) >= 2, (
        "tasks ran in several processes"
    )
    calls = [s for s in spans if s["name"] == "exchange.call"]
    assert calls and all(s["parent_id"] in by_id for s in calls), "parent links intact"
    for call in calls:  # each exchange call hangs under an agent task span
        node = call
        while node["name"] != "analysis.run" and not node["name"].startswith("agent."):
            node = by_id[node["parent_id"]]
        assert node["name"].startswith("agent.")
    waits = [s for s in spans if s["name"] == "limiter.wait"]
    assert waits and all("waited" in s["attributes"] for s in waits)
    requests = [s for s in spans if s["name"] == "exchange.request"]
    answered = [s for s in requests if "error" not in s["attributes"]]
    assert answered and all(s["attributes"]["fallback_level"] == "NONE" for s in answered)
    # a request with no answer names its error: here only the lookups of a protective order
    # list before it is placed, which the exchange does not have yet
    failed = [s["attributes"] for s in requests if "error" in s["attributes"]]
    assert {a["endpoint"] for a in failed} <= {"privateGetOrderList"}, failed
    orders = [s for s in spans if s["name"] == "order"]
    assert len(orders) == 2 and all(
        s["attributes"]["client_order_id"].startswith("cai") for s in orders
    )
    report = json.loads(next((tmp_path / "reports").glob("*/binance_BTCUSDT.json")).read_text())
    assert report["trace_id"] == trace_id
    assert secret not in json.dumps(spans)


def test_a_fallback_and_a_limiter_wait_show_in_the_spans(
    redis_url: str, namespace: str, redis_client: redis.Redis
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from core.config import AppConfig
    from resilience import FallbackConfig, ResilientAPIClient

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with running_sandbox() as sb:
        cfg = AppConfig.model_validate(
            {
                "redis": {"key_prefix": namespace},
                "exchanges": {
                    "binance": {
                        "base_url": sb.url,
                        "rate_limits": [
                            {
                                "type": "fixed_window",
                                "name": "REQUEST_WEIGHT",
                                "limit": 250,
                                "window": 2,
                            }
                        ],
                    }
                },
                "retry_strategies": {"default": {"max_attempts": 1}},
                "rate_limiting": {"high_priority_reserve": 0},
                # each call on its own, timed against the limiter's 2-second windows
                "performance": {"batch_processing": {"enabled": False}},
            }
        )

        async def scenario() -> list[Any]:
            client = ResilientAPIClient(redis_client, cfg, coalesce=False)
            partial = FallbackConfig(level="partial")
            ticker = {"symbol": "BTC/USDT"}
            answers = []
            try:
                with tracer.start_as_current_span("test"):
                    await asyncio.sleep(2 - time.time() % 2 + 0.05)  # the start of a window
                    answers.append(
                        await client.resilient_request("binance", "fetch_ticker", ticker, partial)
                    )
                    # spend the rest of this window: the next call must wait for the next one
                    check = client.limiter.decide("binance", "public", weight=0, charge=False)
                    left = check.remaining["REQUEST_WEIGHT"]
                    assert client.limiter.decide(
                        "binance", "public", weight=left, priority="high"
                    ).allowed
                    answers.append(
                        await client.resilient_request("binance", "fetch_ticker", ticker, partial)
                    )
                    admin(sb.url, "faults", "PUT", [{"kind": "http_503"}])
                    answers.append(
                        await client.resilient_request("binance", "fetch_ticker", ticker, partial)
                    )
            finally:
                await client.close()
            return answers

        from opentelemetry import trace as api

        api.set_tracer_provider(provider)  # this test process's only provider
        answers = asyncio.run(scenario())
    spans = exporter.get_finished_spans()
    waited = [s.attributes["waited"] for s in spans if s.name == "limiter.wait"]
    assert 1.0 < max(waited) < 2.5, waited
    levels = [s.attributes["fallback_level"] for s in spans if s.name == "exchange.request"]
    assert levels[-1] == "PARTIAL" and answers[-1].level.name == "PARTIAL"
