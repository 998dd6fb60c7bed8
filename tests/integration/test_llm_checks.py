"""A full run whose LLM answers off its bounds: the rules answer, the report says why.

Real worker processes, real Redis, the sandbox over HTTP and the fake OpenAI-compatible
server: the analysts are answered a nonsense thesis with full confidence, the strategist a
buy with a stop of -1 (both answers a small model gave). The run completes on the rules
rung, each report names the field and the value that failed, and the one order placed is
the rules' plan, not the LLM's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from tests.integration.fake_openai import FakeOpenAI
from tests.integration.sandbox_fixtures import running_sandbox
from tests.integration.test_agents_cycle import analyse, reports, uptrend, write_config
from tests.integration.workers import worker_fleet

pytestmark = pytest.mark.integration

NONSENSE_CASE = {"thesis": "][", "confidence": 1.0, "invalidation": None, "evidence": []}
BAD_PLAN = {
    "action": "buy",
    "confidence": 1.0,
    "stop_loss": -1,
    "take_profit": 1_000_000,
    "horizon": "4h",
    "rationale": "all in, the LLM says so",
}


def test_answers_off_their_bounds_fall_to_the_rules_and_the_report_says_why(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with (
        FakeOpenAI() as llm,
        running_sandbox(
            starting_balances={"USDT": 10000},
            candles_file=str(uptrend(tmp_path)),
            history_days=5,
            symbols=["BTC/USDT"],
        ) as sb,
    ):
        llm.behaviour.by_schema = {"CaseAnswer": NONSENSE_CASE, "PlanAnswer": BAD_PLAN}
        config = write_config(
            tmp_path,
            sb.url,
            ["BTC/USDT"],
            llm={"base_url": llm.url, "model": "local", "timeout": 5},
        )
        with worker_fleet(redis_url, namespace, tmp_path, config=config) as fleet:
            fleet.start("agents", concurrency=2)
            run = analyse(fleet.env(), config)
            output, _ = run.communicate(timeout=180)
        asked = len(llm.behaviour.requests)
    assert run.returncode == 0, output
    assert asked >= 3, "the analysts and the strategist asked the LLM"
    (report,) = reports(tmp_path)
    for side in ("long", "short"):
        case = report[side]
        assert case["rung"] == "rules" and case["thesis"] != "]["
        assert "thesis '][' has no word of 3 letters" in case["fallback_reason"], case
    plan = report["plan"]
    assert plan["rung"] == "rules" and plan["action"] == "buy", plan
    assert "stop_loss: Input should be greater than 0 (got -1)" in plan["fallback_reason"]
    assert plan["stop_loss"] > 0 and plan["take_profit"] < 1_000_000
    assert plan["rationale"] != BAD_PLAN["rationale"]
    order = report["execution"].get("order")
    assert order is not None, "the rules' buy was placed"
    # the rules' plan, at most (the risk guard may cut it to the per-order notional limit)
    assert 0 < order["filled"] <= plan["size"] * (1 + 1e-9), (order, plan)
    page = next((tmp_path / "reports").glob("*/*.md")).read_text()
    assert "(answered by: rules)" in page
    assert "The LLM did not answer: llm answer off schema" in page and "(got -1)" in page
