"""Bounded reconciliation: real Redis, the Binance sandbox over HTTP, unmodified ccxt, and a
real Celery worker sending ``reconcile.orders``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from bench.reconcile import (
    AMOUNTS,
    SYMBOLS,
    LocalRuntime,
    fleet_config,
    place_history,
    sandbox_settings,
)
from core.keys import KeySpace
from tasks.reconcile import reconcile
from tests.integration.sandbox_fixtures import admin, ccxt_client, running_sandbox
from tests.integration.workers import WorkerFleet, worker_fleet

pytestmark = pytest.mark.integration


def charged(url: str) -> float:
    return float(sum(c["weight_total"] for c in admin(url, "stats")["clients"].values()))


def by_endpoint(url: str) -> dict[str, int]:
    return dict(admin(url, "stats")["requests_by_endpoint"])


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def send_reconcile(fleet: WorkerFleet) -> dict[str, Any]:
    app = fleet.client_app()
    answer = app.send_task("reconcile.orders", args=["binance"], queue="high").get(timeout=60)
    return dict(answer["binance"])


async def _direct_order(url: str, symbol: str, kind: str, price: float | None, cid: str) -> Any:
    ex = ccxt_client(url)
    try:
        await ex.load_markets()
        return await ex.create_order(
            symbol, kind, "buy", AMOUNTS[symbol], price, {"newClientOrderId": cid}
        )
    finally:
        await ex.close()


def test_the_second_run_asks_only_about_orders_not_final_and_reports_each_fill_once(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    keys = KeySpace(namespace)
    with running_sandbox(**sandbox_settings(20)) as sb:
        # history before the upgrade: 8 filled market orders, 2 limit orders resting
        history = asyncio.run(place_history(sb.url, redis_client, keys, 10, 2))
        resting = [o for o in history if o["status"] == "open"]
        assert len(resting) == 2 and all(o["status"] == "closed" for o in history[2:])
        config = fleet_config(sb.url, namespace).model_dump(mode="json", exclude_unset=True)
        config["trading"] = {"risk": {"max_position_per_symbol": 100000}}
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
        with worker_fleet(redis_url, namespace, tmp_path) as fleet:
            fleet.start("reconciler")
            first = send_reconcile(fleet)
            # after the first run: an order through the gate (indexed from its audit entry),
            # a crash between placing and recording (a cai order nobody recorded), and the
            # market falling through the first resting order's price (it fills)
            gate = (
                fleet.client_app()
                .send_task(
                    "exchange.request",
                    args=[
                        "binance",
                        "create_order",
                        {
                            "symbol": "SOL/USDT",
                            "type": "market",
                            "side": "buy",
                            "amount": AMOUNTS["SOL/USDT"],
                            "params": {"clientOrderId": "cai-through-the-gate"},
                        },
                    ],
                    queue="high",
                )
                .get(timeout=60)["data"]
            )
            low = float(resting[1]["price"])
            stray = asyncio.run(_direct_order(sb.url, "ETH/USDT", "limit", low, "cai-stray"))
            filling = resting[0]
            path = sb.sandbox.exchange.path(filling["symbol"].replace("/", ""))
            path.set_price(sb.sandbox.clock.now(), filling["price"] * 0.9)
            before = by_endpoint(sb.url)
            second = send_reconcile(fleet)
            asked = delta(before, by_endpoint(sb.url))
            before = by_endpoint(sb.url)
            third = send_reconcile(fleet)
            asked_again = delta(before, by_endpoint(sb.url))
    placed = {o["clientOrderId"] for o in history}
    assert sorted(first["matched"]) == sorted(placed), "indexed from the records, none asked"
    assert first["checked"] == 0 and first["missing"] == [] and first["unknown"] == []
    assert {f["client_order_id"] for f in first["fills"]} == placed - {
        o["clientOrderId"] for o in resting
    }
    # the second run: one order asked (the resting one that left the open orders)
    assert asked.get("GET /api/v3/order", 0) == 1 and second["checked"] == 1, asked
    assert asked["GET /api/v3/openOrders"] == len(SYMBOLS)
    assert asked["GET /api/v3/myTrades"] == len(SYMBOLS) and asked["GET /api/v3/account"] == 1
    # matched: the order that filled, the one through the gate, the one still resting
    confirmed = {filling["clientOrderId"], gate["clientOrderId"], resting[1]["clientOrderId"]}
    assert set(second["matched"]) == confirmed and second["missing"] == []
    assert second["unknown"] == ["cai-stray"] and second["foreign"] == []
    new_fills = {f["client_order_id"]: f for f in second["fills"]}
    assert set(new_fills) == {filling["clientOrderId"], gate["clientOrderId"]}
    assert new_fills[filling["clientOrderId"]]["price"] == pytest.approx(filling["price"])
    assert new_fills[filling["clientOrderId"]]["order_id"] == str(filling["id"])
    assert stray["status"] == "open"
    assert second["balances"]["USDT"]["total"] < 1_000_000
    assert second["weight"] == sum(second["weight_by_scope"].values()) > 0
    # the third run: nothing changed, nothing reported twice, no order asked
    assert third["fills"] == [] and third["checked"] == 0
    assert asked_again.get("GET /api/v3/order", 0) == 0, asked_again
    assert third["weight"] == second["weight"] - 4 * (second["checked"] - third["checked"])


def test_a_runs_weight_is_the_same_with_10_and_100_past_orders(
    redis_url: str, namespace: str, redis_client: redis.Redis
) -> None:
    weights: dict[int, list[float]] = {}
    for size in (10, 100):
        with running_sandbox(**sandbox_settings(size)) as sb:
            prefix = f"{namespace}{size}:"
            rt = LocalRuntime(fleet_config(sb.url, prefix), redis_url)
            asyncio.run(place_history(sb.url, redis_client, KeySpace(prefix), size, 3))

            async def runs(rt: LocalRuntime = rt, url: str = sb.url) -> tuple[Any, float]:
                try:
                    await rt.exchange_client().markets("binance")  # once per process
                    before = charged(url)
                    summaries = [await reconcile(rt, "binance") for _ in range(2)]
                    return summaries, charged(url) - before
                finally:
                    await rt.close()

            summaries, spent = asyncio.run(runs())
        weights[size] = [s["weight"] for s in summaries]
        assert sum(weights[size]) == spent, "the summary's weight is what the sandbox charged"
        assert all(s["checked"] == 0 for s in summaries)
    assert weights[10] == weights[100], weights


def test_a_position_the_accounts_balance_does_not_cover_is_reported_as_drift(
    redis_url: str, namespace: str, redis_client: redis.Redis
) -> None:
    from resilience.ledger import Fill, Ledger

    with running_sandbox(**sandbox_settings(1)) as sb:
        rt = LocalRuntime(fleet_config(sb.url, namespace), redis_url)
        ledger = Ledger(redis_client, KeySpace(namespace))
        # the ledger believes in 50 BTC; the sandbox account holds less (it started with USDT)
        ledger.apply_fill("binance", "BTC/USDT", Fill("cai-drift-btc", "buy", 50.0, 100.0))

        async def run() -> Any:
            try:
                return await reconcile(rt, "binance")
            finally:
                await rt.close()

        summary = asyncio.run(run())
    (drift,) = [d for d in summary["drift"] if d["kind"] == "balance"]
    held = float((summary["balances"].get("BTC") or {}).get("total") or 0.0)
    assert drift == {
        "kind": "balance",
        "exchange": "binance",
        "symbol": "BTC/USDT",
        "client_order_id": "",
        "what": f"the ledger holds 50 BTC, the account {held:g}",
        "applied": False,
        "asset": "BTC",
        "ledger": 50.0,
        "balance": held,
        "short": 50.0 - held,
    }
    assert held < 50.0
    # its fill cannot be checked: the sandbox lists no BTC/USDT market (said, not drift)
    (error,) = summary["errors"]
    assert error.startswith("BTC/USDT cai-drift-btc: InvalidRequestError"), error
