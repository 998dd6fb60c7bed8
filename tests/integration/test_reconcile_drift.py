"""Drift between the ledger and the exchange in orders and fills: real Redis, the Binance
sandbox over HTTP with unmodified ccxt, reconciliation run in this process."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis

from bench.reconcile import LocalRuntime, fleet_config, sandbox_settings
from core.keys import KeySpace
from resilience.ledger import Fill, Ledger
from tasks.reconcile import reconcile
from tests.integration.sandbox_fixtures import admin, ccxt_client, running_sandbox

pytestmark = pytest.mark.integration


async def placed_behind_the_fleet(url: str) -> tuple[Any, Any]:
    """Place two ``cai`` orders whose answers the fleet never recorded (lost answers): a
    market buy of ETH that fills, and a SOL limit buy far below the market that rests."""
    ex = ccxt_client(url)
    try:
        await ex.load_markets()
        filled = await ex.create_order(
            "ETH/USDT", "market", "buy", 0.005, None, {"newClientOrderId": "cai-lost-answer"}
        )
        last = (await ex.fetch_ticker("SOL/USDT"))["last"]
        low = float(ex.price_to_precision("SOL/USDT", last * 0.5))
        resting = await ex.create_order(
            "SOL/USDT", "limit", "buy", 0.1, low, {"newClientOrderId": "cai-lost-resting"}
        )
        return filled, resting
    finally:
        await ex.close()


async def still_open(url: str, symbol: str) -> list[str]:
    ex = ccxt_client(url)
    try:
        return [str(o["clientOrderId"]) for o in await ex.fetch_open_orders(symbol)]
    finally:
        await ex.close()


def asked(url: str) -> dict[str, int]:
    return dict(admin(url, "stats")["requests_by_endpoint"])


def test_orders_and_fills_the_ledger_and_the_exchange_disagree_on_are_drift(
    redis_url: str, namespace: str, redis_client: redis.Redis
) -> None:
    ledger = Ledger(redis_client, KeySpace(namespace))
    with running_sandbox(**sandbox_settings(5)) as sb:
        rt = LocalRuntime(fleet_config(sb.url, namespace), redis_url)

        async def runs() -> list[dict[str, Any]]:
            try:
                summaries = [await reconcile(rt, "binance")]
                lost, _ = await placed_behind_the_fleet(sb.url)
                # a fill the ledger counted that the exchange never made
                phantom = Fill("cai-phantom-fill", "buy", 0.1, 150.0)
                await ledger.aapply_fill("binance", "SOL/USDT", phantom, mode="sandbox")
                summaries.append(await reconcile(rt, "binance"))
                before = asked(sb.url)
                summaries.append(await reconcile(rt, "binance"))
                summaries.append({"lost": lost, "asked": asked(sb.url), "before": before})
                return summaries
            finally:
                await rt.close()

        first, second, third, seen = asyncio.run(runs())
        resting = asyncio.run(still_open(sb.url, "SOL/USDT"))
    assert first["drift"] == []
    by_id = {d["client_order_id"]: d for d in second["drift"]}
    lost = by_id["cai-lost-answer"]
    assert (lost["kind"], lost["exchange"], lost["symbol"]) == ("fill", "binance", "ETH/USDT")
    assert lost["exchange_filled"] == pytest.approx(seen["lost"]["filled"])
    assert lost["ledger_filled"] == 0 and lost["applied"] is True, lost
    assert "not in the ledger" in lost["what"]
    rests = by_id["cai-lost-resting"]
    assert (rests["kind"], rests["symbol"], rests["status"]) == ("order", "SOL/USDT", "open")
    assert rests["applied"] is False and "not in the fleet's records" in rests["what"]
    phantom = by_id["cai-phantom-fill"]
    assert (phantom["kind"], phantom["symbol"], phantom["applied"]) == ("fill", "SOL/USDT", False)
    assert phantom["ledger_filled"] == 0.1 and phantom["exchange_filled"] == 0
    assert "not on the exchange" in phantom["what"], phantom
    balance = next(d for d in second["drift"] if d["kind"] == "balance")
    assert (balance["asset"], balance["ledger"], balance["symbol"]) == ("SOL", 0.1, "SOL/USDT")
    # the fill that is ours by client order id went to the ledger, once; nothing else moved
    eth = ledger.position("binance", "ETH/USDT")
    assert eth is not None and eth.amount == pytest.approx(seen["lost"]["filled"], rel=0.01)
    assert eth.fills == ["cai-lost-answer"]
    sol = ledger.position("binance", "SOL/USDT")
    assert sol is not None and sol.amount == 0.1 and sol.fills == ["cai-phantom-fill"]
    assert resting == ["cai-lost-resting"], "drift is reported, the order is left alone"
    # the next run: what still differs is reported again, without asking the exchange again
    assert sorted(d["client_order_id"] for d in third["drift"] if d["kind"] != "balance") == [
        "cai-lost-resting",
        "cai-phantom-fill",
    ]
    assert seen["asked"].get("GET /api/v3/order", 0) == seen["before"].get("GET /api/v3/order", 0)
