"""Reconciliation repairs and settles protective exits: real Redis, real ``celery worker``
processes sending ``reconcile.orders``, the Binance sandbox over HTTP with unmodified ccxt.

No fleet watch runs here (no beat, no ``protection.watch`` sent): whatever is repaired or
settled, reconciliation did it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import redis

from core.config import AppConfig
from core.keys import KeySpace
from resilience import ResilientAPIClient
from resilience.ledger import Ledger, PlanRef
from resilience.order_request import OrderRequest
from sandbox.admin import set_price
from tests.integration.sandbox_fixtures import admin, ccxt_client, running_sandbox
from tests.integration.test_order_gate import eth_price, fleet_on, settings
from tests.integration.test_protection import SYMBOL, all_lists, open_lists
from tests.integration.workers import WorkerFleet

pytestmark = pytest.mark.integration

OCO = "POST /api/v3/orderList/oco"


def entry_without_protection(config: dict[str, Any], client: redis.Redis, price: float) -> Any:
    """Buy through the order gate with a plan's exits, and stop there: the worker that
    would have protected the position died between the fill and the protection."""

    async def call() -> Any:
        api = ResilientAPIClient(client, AppConfig.model_validate(config))
        request = OrderRequest(
            exchange="binance",
            endpoint="create_order",
            symbol=SYMBOL,
            side="buy",
            type="market",
            amount=0.01,
            client_order_id="cai0crash0between0fill0and0protect",
            params={"symbol": SYMBOL, "type": "market", "side": "buy", "amount": 0.01},
            origin="execution:crash-run",
        )
        try:
            plan = PlanRef("crash-run", price * 0.97, price * 1.05, "4h")
            return await api.orders.submit(request, plan)
        finally:
            await api.close()

    return asyncio.run(call())


def cancel_list(url: str, list_cid: str) -> None:
    """Cancel an order list behind the fleet's back (an operator on the exchange's site)."""

    async def call() -> None:
        ex = ccxt_client(url)
        try:
            await ex.privateDeleteOrderList({"symbol": "ETHUSDT", "listClientOrderId": list_cid})
        finally:
            await ex.close()

    asyncio.run(call())


def reconciles(fleet: WorkerFleet, times: int = 1) -> list[dict[str, Any]]:
    """Send ``times`` reconcile runs at once; return their Binance summaries."""
    app = fleet.client_app()
    sent = [app.send_task("reconcile.orders", args=["binance"], queue="high") for _ in range(times)]
    return [dict(r.get(timeout=90)["binance"]) for r in sent]


def posted(url: str) -> int:
    return int(admin(url, "stats")["requests_by_endpoint"].get(OCO, 0))


def test_reconcile_protects_a_crashed_entry_once_replaces_a_cancelled_list_and_settles_a_fill(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    ledger = Ledger(redis_client, KeySpace(namespace))
    with running_sandbox(starting_balances={"USDT": 100000}) as sb:
        config = settings(sb.url, namespace)
        config["watchlist"] = [{"exchange": "binance", "symbols": [SYMBOL]}]
        price = eth_price(config, redis_client)
        bought = entry_without_protection(config, redis_client, price)
        assert bought.approved and open_lists(sb.url) == [], "filled, not protected"
        with fleet_on(redis_url, namespace, tmp_path, config, concurrency=2) as fleet:
            # 1. two reconciles at once: the position is protected, once
            both = reconciles(fleet, 2)
            protected = ledger.position("binance", SYMBOL)
            lists, sent = open_lists(sb.url), posted(sb.url)
            # 2. the list is cancelled on the exchange: the next reconcile replaces it
            assert protected is not None and protected.protection is not None
            cancel_list(sb.url, protected.protection["order_ids"][0])
            (replacing,) = reconciles(fleet)
            replaced = ledger.position("binance", SYMBOL)
            lists_after = open_lists(sb.url)
            # 3. the fleet is away while the stop fires: the next reconcile settles it
            assert replaced is not None and replaced.protection is not None
            set_price(sb.url, SYMBOL, price * 0.968)  # below the stop, above its limit
            (settling,) = reconciles(fleet)
            after = ledger.position("binance", SYMBOL)
            (again,) = reconciles(fleet)
            every = all_lists(sb.url)
    # 1.
    repairs = [r for s in both for r in s.get("protection", [])]
    assert [(r["symbol"], r["action"], r["kind"]) for r in repairs] == [
        (SYMBOL, "protected", "exchange")
    ], both
    assert protected.protection["kind"] == "exchange"
    assert [x["listClientOrderId"] for x in lists] == protected.protection["order_ids"][:1]
    assert sent == 1, "one OCO sent for the two reconciles"
    # 2.
    (repair,) = replacing["protection"]
    assert repair["action"] == "replaced" and repair["kind"] == "exchange", repair
    assert "ALL_DONE" in repair["why"] or "canceled" in repair["why"], repair
    assert replaced.protection["kind"] == "exchange"
    new_list = replaced.protection["order_ids"][0]
    assert new_list != protected.protection["order_ids"][0]
    assert [x["listClientOrderId"] for x in lists_after] == [new_list]
    # 3.
    (settled,) = settling["protection"]
    stop_leg = replaced.protection["order_ids"][2]
    assert settled["action"] == "settled" and settled["leg"] == "stop_loss", settled
    assert settled["client_order_id"] == stop_leg and settled["list"] == new_list
    assert settled["filled"] > 0
    assert settled["other"]["status"] in ("canceled", "expired"), settled
    assert after is None, after
    assert ledger.exits("binance")[SYMBOL]["reason"] == "stop_loss"
    (closed, *_) = ledger.history("binance")
    assert stop_leg in closed.fills and closed.realized_pnl < 0
    # nothing settled twice, the legs' fills are the fleet's (not unknown), no drift
    assert again["protection"] == [] and again["unknown"] == [] and again["drift"] == []
    assert settling["unknown"] == [] and settling["drift"] == [], settling
    assert len(ledger.history("binance")) == 1
    assert len(every) == 2 and all(x["listOrderStatus"] == "ALL_DONE" for x in every)


def test_reconcile_has_the_fleet_watch_protect_a_crashed_entry_where_there_is_no_oco(
    redis_url: str, namespace: str, redis_client: redis.Redis
) -> None:
    from bench.reconcile import LocalRuntime
    from resilience.ledger import Fill
    from tasks.reconcile import reconcile

    ledger = Ledger(redis_client, KeySpace(namespace))
    with running_sandbox(dialect="okx", starting_balances={"USDT": 10000}) as sb:
        config = AppConfig.model_validate(
            {
                "redis": {"key_prefix": namespace},
                "exchanges": {"okx": {"base_url": sb.url}},
                "watchlist": [{"exchange": "okx", "symbols": [SYMBOL]}],
            }
        )
        rt = LocalRuntime(config, redis_url)
        # the fill reached the ledger with its plan; the worker died before protecting it
        plan = PlanRef("okx-crash", 1000.0, 9000.0, "4h")
        fill = Fill("cai0okx0crash0entry", "buy", 0.01, 3000.0)
        ledger.apply_fill("okx", SYMBOL, fill, plan=plan, mode="sandbox")

        async def runs() -> list[dict[str, Any]]:
            try:
                return [await reconcile(rt, "okx") for _ in range(2)]
            finally:
                await rt.close()

        first, second = asyncio.run(runs())
    position = ledger.position("okx", SYMBOL)
    assert [(r["symbol"], r["action"], r["kind"]) for r in first["protection"]] == [
        (SYMBOL, "protected", "watch")
    ], first
    assert position is not None and position.protection is not None
    assert position.protection["kind"] == "watch"
    assert second["protection"] == []
