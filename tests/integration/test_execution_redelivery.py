"""A redelivered execution protects the position its first delivery filled and left bare.

The first delivery of an execution can die after its order filled (the fill is in the
ledger, the claim settled) and before it protected the position. The broker delivers the
message again; the gate answers that delivery with the first one's order (``source:
found``), and the stage must still protect the position at once, not leave it to a later
watch or reconcile pass. Real Redis, a real ``celery worker``, the sandbox over HTTP.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import cast

import pytest
import redis

from agents.types import TradePlan
from core.config import AppConfig
from core.keys import KeySpace
from resilience import ResilientAPIClient
from resilience.ledger import Ledger, PlanRef
from tasks.execution import order_request
from tests.integration.sandbox_fixtures import running_sandbox
from tests.integration.test_order_gate import eth_price, execute, fleet_on, seed_plan, settings
from tests.integration.test_protection import open_lists
from workers.runtime import run_async

pytestmark = pytest.mark.integration

SYMBOL = "ETH/USDT"


def fill_without_protection(config: AppConfig, client: redis.Redis, run_id: str) -> None:
    """Do what a first delivery did before it died: the plan's order, through the gate."""
    keys = KeySpace(config.redis.key_prefix)
    raw = cast(bytes, client.get(keys.stage(run_id, "binance", SYMBOL, "plan")))
    plan = TradePlan.model_validate(json.loads(raw))
    api = ResilientAPIClient(client, config)

    async def first_delivery() -> None:
        try:
            request = order_request(run_id, "binance", plan, api.profile("binance"))
            opens = PlanRef(run_id, plan.stop_loss, plan.take_profit, plan.horizon)
            answer = await api.orders.submit(request, opens)
            assert answer.approved and answer.order is not None, answer
        finally:
            await api.close()

    run_async(first_delivery(), timeout=60)


def test_a_redelivered_execution_protects_the_position_its_first_delivery_left_bare(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    keys, ledger = KeySpace(namespace), Ledger(redis_client, KeySpace(namespace))
    with running_sandbox(starting_balances={"USDT": 100000}) as sb:
        config = settings(sb.url, namespace)
        run_id = f"redeliver-{uuid.uuid4().hex[:8]}"
        seed_plan(redis_client, namespace, run_id, eth_price(config, redis_client))
        fill_without_protection(AppConfig.model_validate(config), redis_client, run_id)
        bare = ledger.position("binance", SYMBOL)
        with fleet_on(redis_url, namespace, tmp_path, config) as fleet:
            execute(fleet.client_app(), run_id).get(timeout=60)
        raw = cast(bytes, redis_client.get(keys.stage(run_id, "binance", SYMBOL, "execution")))
        outcome = json.loads(raw)
        position = ledger.position("binance", SYMBOL)
        lists = open_lists(sb.url)
    assert bare is not None and bare.protection is None, bare
    assert outcome["order"]["source"] == "found", outcome["order"]
    assert outcome.get("protection", {}).get("kind") == "exchange", outcome
    assert position is not None and position.amount == bare.amount, position
    assert position.protection is not None and position.protection["kind"] == "exchange"
    assert [x["listClientOrderId"] for x in lists] == position.protection["order_ids"][:1]
