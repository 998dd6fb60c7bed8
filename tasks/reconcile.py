"""Reconciliation: compare the orders the fleet recorded with the exchange's own view.

For every order in the fleet's execution records, the exchange is asked for it by client
order id: ``matched`` when it exists with the recorded side; ``missing`` when the exchange
has no such order. Every open order on the exchange for the watched symbols that the fleet
did not record is ``unknown`` if it carries our ``cai`` prefix (placed by the fleet but
never recorded: a crash between placing and recording) and ``foreign`` otherwise.
"""

from __future__ import annotations

import json
import time
from typing import Any, cast

from celery import shared_task

from tasks import context
from tasks.context import Runtime


def recorded_orders(rt: Runtime, exchange: str) -> dict[str, dict[str, Any]]:
    """Return the fleet's recorded orders on ``exchange`` by client order id."""
    client, pattern = rt.redis_client(), rt.keyspace().stage_pattern(exchange, "execution")
    orders: dict[str, dict[str, Any]] = {}
    for key in client.scan_iter(match=pattern, count=500):
        outcome = json.loads(cast(bytes, client.get(key) or b"{}"))
        order = outcome.get("order") or {}
        if order.get("clientOrderId") and order.get("status") != "simulated":
            symbol = key.decode().rsplit(":", 2)[-2]
            orders[order["clientOrderId"]] = {**order, "exchange_symbol": symbol}
    return orders


async def reconcile(rt: Runtime, exchange: str) -> dict[str, Any]:
    """Return matched, missing, unknown and foreign orders; store the summary in Redis."""
    config, client = rt.config(), rt.exchange_client()
    ours = recorded_orders(rt, exchange)
    symbols = config.watched(exchange)
    by_exchange_symbol = {s.replace("/", ""): s for s in symbols}
    summary: dict[str, Any] = {
        "exchange": exchange,
        "at": time.time(),
        "matched": [],
        "missing": [],
        "unknown": [],
        "foreign": [],
    }
    for cid, order in ours.items():
        symbol = by_exchange_symbol.get(order["exchange_symbol"])
        if symbol is None:
            continue
        found = await client.find_order(exchange, symbol, cid)
        summary[
            "matched" if found and found.get("side") == order.get("side") else "missing"
        ].append(cid)
    for symbol in symbols:
        answer = await client.resilient_request(exchange, "fetch_open_orders", {"symbol": symbol})
        for order in answer.data:
            cid = str(order.get("clientOrderId") or "")
            if cid in ours:
                continue
            summary["unknown" if cid.startswith("cai") else "foreign"].append(cid or order["id"])
    key = rt.keyspace().reconcile_summary(exchange)
    rt.redis_client().set(key, json.dumps(summary), ex=7 * 86400)
    return summary


@shared_task(name="reconcile.orders")
def reconcile_orders(exchange: str | None = None) -> dict[str, Any]:
    """Reconcile one exchange (or every configured one); return the summaries."""
    rt = context.current()
    names = [exchange] if exchange else list(rt.config().exchanges)
    return {name: rt.run_async(reconcile(rt, name), 300) for name in names}
