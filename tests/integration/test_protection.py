"""Protective exits on real workers and the sandbox: stops placed or watched, exits once.

Real Redis, real ``celery worker`` processes, the sandbox over HTTP with unmodified ccxt.
The fleet watch (``protection.watch``) is sent by the test as beat would send it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from core.keys import KeySpace
from resilience.ledger import Fill, Ledger, PlanRef, Position
from sandbox.admin import set_price
from tests.integration.sandbox_fixtures import admin, ccxt_client, running_sandbox
from tests.integration.test_order_gate import (
    direct,
    eth_price,
    execute,
    fleet_on,
    seed_plan,
    settings,
)
from tests.integration.workers import WorkerFleet

pytestmark = pytest.mark.integration

SYMBOL = "ETH/USDT"


def watch(fleet: WorkerFleet, times: int = 1) -> list[Any]:
    """Send ``times`` fleet watch passes at once (as beats would); return their results."""
    app = fleet.client_app()
    sent = [app.send_task("protection.watch", queue="high") for _ in range(times)]
    return [r.get(timeout=60) for r in sent]


def until(ledger: Ledger, fleet: WorkerFleet, done: Any, passes: int = 10) -> Position | None:
    """Run watch passes (a few seconds at most) until ``done(position)``; return it then."""
    position = ledger.position("binance", SYMBOL)
    for _ in range(passes):
        if done(position):
            return position
        watch(fleet, 2)
        position = ledger.position("binance", SYMBOL)
        time.sleep(0.5)  # the watch's ticker is shared by the fleet for up to a second
    return position


def open_lists(url: str) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        ex = ccxt_client(url)
        try:
            found: list[dict[str, Any]] = await ex.privateGetOpenOrderList()
            return found
        finally:
            await ex.close()

    return asyncio.run(read())


def sells(url: str) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        ex = ccxt_client(url)
        try:
            orders = await ex.fetch_orders(SYMBOL)
            return [o for o in orders if o["side"] == "sell" and o["status"] == "closed"]
        finally:
            await ex.close()

    return asyncio.run(read())


def exits_audited(client: redis.Redis, namespace: str) -> list[dict[str, str]]:
    entries = cast(list[Any], client.xrange(KeySpace(namespace).order_audit()))
    decoded = [{k.decode(): v.decode() for k, v in e.items()} for _, e in entries]
    return [e for e in decoded if e["reasons"].startswith("exit:")]


def entered(fleet: WorkerFleet, client: redis.Redis, namespace: str, price: float) -> Any:
    run_id = f"protect-{uuid.uuid4().hex[:8]}"
    seed_plan(client, namespace, run_id, price)
    execute(fleet.client_app(), run_id).get(timeout=60)
    raw = cast(
        bytes | None, client.get(KeySpace(namespace).stage(run_id, "binance", SYMBOL, "execution"))
    )
    return json.loads(raw or b"{}")


def test_an_entry_on_binance_gets_an_oco_and_its_stop_closes_it_once(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    ledger = Ledger(redis_client, KeySpace(namespace))
    with running_sandbox(starting_balances={"USDT": 100000}) as sb:
        config = settings(sb.url, namespace)
        price = eth_price(config, redis_client)
        with fleet_on(redis_url, namespace, tmp_path, config, concurrency=2) as fleet:
            outcome = entered(fleet, redis_client, namespace, price)
            position = ledger.position("binance", SYMBOL)
            lists = open_lists(sb.url)
            assert outcome["protection"]["kind"] == "exchange", outcome
            assert position is not None and position.protection is not None
            assert position.protection["kind"] == "exchange"
            assert [x["listClientOrderId"] for x in lists] == position.protection["order_ids"][:1]
            # below the stop, above its limit: the stop leg fires and fills
            set_price(sb.url, SYMBOL, price * 0.968)
            after = until(ledger, fleet, lambda p: p is None)
            left = open_lists(sb.url)
            sold = sells(sb.url)
    assert after is None, after
    assert left == []
    assert len(sold) == 1 and sold[0]["clientOrderId"] == position.protection["order_ids"][2]
    assert ledger.exits("binance")[SYMBOL]["reason"] == "stop_loss"


def test_a_paper_entry_is_watched_and_two_watches_close_it_once_at_the_stop(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    ledger = Ledger(redis_client, KeySpace(namespace))
    with running_sandbox(starting_balances={"USDT": 100000}) as sb:
        config = settings(sb.url, namespace, is_sandbox=False)  # paper: nothing is sent
        price = eth_price(config, redis_client)
        with fleet_on(redis_url, namespace, tmp_path, config, concurrency=2) as fleet:
            outcome = entered(fleet, redis_client, namespace, price)
            position = ledger.position("binance", SYMBOL)
            assert outcome["protection"] == {"kind": "watch"}, outcome
            assert position is not None and position.protection is not None
            assert position.protection["kind"] == "watch"
            assert watch(fleet)[0]["actions"] == {}, "nothing crossed yet"
            set_price(sb.url, SYMBOL, price * 0.96)
            after = until(ledger, fleet, lambda p: p is None)
        posted = admin(sb.url, "stats")["requests_by_endpoint"].get("POST /api/v3/order", 0)
    assert after is None
    (exit_entry,) = exits_audited(redis_client, namespace)
    assert exit_entry["reasons"] == "exit: stop_loss" and exit_entry["outcome"] == "paper"
    assert posted == 0
    (closed, *_) = ledger.history("binance")
    assert closed.realized_pnl < 0


def test_the_take_profit_and_the_horizon_close_watched_positions(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    ledger = Ledger(redis_client, KeySpace(namespace))
    with running_sandbox(starting_balances={"USDT": 100000}) as sb:
        config = settings(sb.url, namespace, is_sandbox=False)
        price = eth_price(config, redis_client)
        with fleet_on(redis_url, namespace, tmp_path, config) as fleet:
            entered(fleet, redis_client, namespace, price)
            set_price(sb.url, SYMBOL, price * 1.06)
            after_target = until(ledger, fleet, lambda p: p is None)
            reason_target = ledger.exits("binance")[SYMBOL]["reason"]
            # a position whose plan's horizon has passed
            plan = PlanRef("horizon-run", price * 0.5, price * 2, "1s")
            fill = Fill("cai-horizon-entry", "buy", 0.01, price * 1.06)
            ledger.apply_fill("binance", SYMBOL, fill, plan=plan, mode="paper")
            time.sleep(1.1)
            after_horizon = until(ledger, fleet, lambda p: p is None)
    assert after_target is None and reason_target == "take_profit"
    assert after_horizon is None
    assert ledger.exits("binance")[SYMBOL]["reason"] == "horizon"
    reasons = [e["reasons"] for e in exits_audited(redis_client, namespace)]
    assert reasons == ["exit: take_profit", "exit: horizon"]


def test_a_crash_between_fill_and_protection_is_repaired_and_a_manual_sell_cancels_it(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    ledger = Ledger(redis_client, KeySpace(namespace))
    with running_sandbox(starting_balances={"USDT": 100000, "ETH": 1}) as sb:
        config = settings(sb.url, namespace)
        price = eth_price(config, redis_client)
        # the fill reached the ledger with its plan; the worker died before protecting it
        plan = PlanRef("crash-run", price * 0.97, price * 1.05, "4h")
        fill = Fill("cai-crash-entry", "buy", 0.01, price)
        ledger.apply_fill("binance", SYMBOL, fill, plan=plan, mode="sandbox")
        with fleet_on(redis_url, namespace, tmp_path, config) as fleet:
            (repair,) = watch(fleet)
            position = ledger.position("binance", SYMBOL)
            lists = open_lists(sb.url)
            assert repair["actions"] == {f"binance {SYMBOL}": "protected:exchange"}, repair
            assert position is not None and position.protection is not None
            assert [x["listClientOrderId"] for x in lists] == position.protection["order_ids"][:1]
            # a manual sell through the gate: the protection is cancelled first
            sell = {"symbol": SYMBOL, "type": "market", "side": "sell", "amount": 0.01}
            order = direct(config, redis_client, "create_order", sell)
            left = open_lists(sb.url)
    assert order["status"] == "closed", order
    assert left == []
    assert ledger.position("binance", SYMBOL) is None


def test_two_workers_closing_one_position_at_once_sell_it_once(
    namespace: str, redis_client: redis.Redis
) -> None:
    from core.config import AppConfig
    from resilience import ResilientAPIClient
    from resilience.exits import close_position

    ledger = Ledger(redis_client, KeySpace(namespace))
    with running_sandbox(starting_balances={"USDT": 100000}) as sb:
        config = settings(sb.url, namespace, is_sandbox=False)
        price = eth_price(config, redis_client)
        plan = PlanRef("twice-run", price * 0.9, price * 1.1, "4h")
        ledger.apply_fill("binance", SYMBOL, Fill("cai-twice", "buy", 0.01, price), plan=plan)

        async def both() -> list[Any]:
            apis = [ResilientAPIClient(redis_client, AppConfig.model_validate(config))] * 2
            try:
                return list(
                    await asyncio.gather(
                        *(
                            close_position(a, "binance", SYMBOL, "manual", origin="test")
                            for a in apis
                        )
                    )
                )
            finally:
                await apis[0].close()

        first, second = asyncio.run(both())
    assert ledger.position("binance", SYMBOL) is None
    sold = [e for e in exits_audited(redis_client, namespace) if e["outcome"] == "paper"]
    assert len(sold) == 1, sold
    assert first is not None and (second is None or second["id"] == first["id"])


def all_lists(url: str) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        ex = ccxt_client(url)
        try:
            found: list[dict[str, Any]] = await ex.privateGetAllOrderList()
            return found
        finally:
            await ex.close()

    return asyncio.run(read())


def protect_here(config: dict[str, Any], client: redis.Redis) -> Any:
    """Protect the ledger's ETH position from this process (as the watch or a reconcile)."""
    from core.config import AppConfig
    from resilience import ResilientAPIClient
    from resilience.exits import protect

    async def call() -> Any:
        api = ResilientAPIClient(client, AppConfig.model_validate(config))
        try:
            return await protect(api, "binance", SYMBOL)
        finally:
            await api.close()

    return asyncio.run(call())


@pytest.mark.parametrize(
    ("kind", "seconds"),
    [("response_lost", 0.2), ("reset", 0.1), ("hang", 3.5)],  # hang: past the 3 s read timeout
)
def test_an_oco_whose_outcome_is_unknown_is_looked_up_by_its_list_id_before_any_resend(
    namespace: str, redis_client: redis.Redis, kind: str, seconds: float
) -> None:
    ledger = Ledger(redis_client, KeySpace(namespace))
    with running_sandbox(starting_balances={"USDT": 100000, "ETH": 1}) as sb:
        config = settings(sb.url, namespace)
        price = eth_price(config, redis_client)
        plan = PlanRef("unknown-oco", price * 0.97, price * 1.05, "4h")
        fill = Fill(f"cai-unknown-oco-{kind}", "buy", 0.01, price)
        ledger.apply_fill("binance", SYMBOL, fill, plan=plan, mode="sandbox")
        oco = "POST /api/v3/orderList/oco"
        admin(
            sb.url,
            "faults",
            "PUT",
            [{"kind": kind, "seconds": seconds, "count": 1, "endpoint": oco}],
        )
        how = protect_here(config, redis_client)
        while sum(sb.sandbox.in_flight.values()):  # a hung request is answered late
            time.sleep(0.1)
        lists = all_lists(sb.url)
        counts = admin(sb.url, "stats")["requests_by_endpoint"]
    position = ledger.position("binance", SYMBOL)
    assert how is not None and how["kind"] == "exchange", how
    assert position is not None and position.protection == {**position.protection, **how}
    assert [x["listClientOrderId"] for x in lists] == how["order_ids"][:1], lists
    # found by its list client order id: never sent again when the first one made it
    if kind == "response_lost":
        assert counts[oco] == 1, counts
    assert counts["GET /api/v3/orderList"] >= 2, "looked up before sending and after the fault"
