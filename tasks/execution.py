"""The execution stage: the plan through the risk guard to at most one order.

Every order the fleet sends, from this stage or any other entry point, passes the order
gate in ``resilience/orders.py``; this stage turns a plan into that order.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from agents import risk as risk_lib
from agents.orders import client_order_id
from agents.types import TradePlan
from core.events import emit
from core.tracing import span
from exchanges.limited import request_priority
from ratelimit.pools import Priority
from resilience import FallbackConfig
from tasks.context import Runtime
from tasks.stages import load, save

log = logging.getLogger(__name__)

#: Reads for the risk guard and orders: fresh (no fallback), but may wait for the budget.
FRESH = FallbackConfig(level="none", timeout=150)


async def account_equity(rt: Runtime, exchange: str, balance: dict[str, Any]) -> float:
    """Return the account's value in the quote currency (USDT), over the watched assets."""
    totals = balance.get("total") or {}
    equity = float(totals.get("USDT") or 0.0)
    client, watchlist = rt.exchange_client(), rt.config().watched(exchange)
    max_age = rt.config().performance.batch_processing.watchlist_max_age
    # prices from the watchlist's shared batched read, the snapshots' (at most max_age old)
    recent = FallbackConfig(level="none", timeout=150, fresh_ttl=max_age)
    for symbol in watchlist:
        amount = float(totals.get(symbol.split("/")[0]) or 0.0)
        if amount and symbol.endswith("/USDT"):
            answer = await client.resilient_within(
                exchange, "fetch_ticker", symbol, watchlist, recent
            )
            equity += amount * float(answer.data["last"])
    return equity


def daily_pnl(rt: Runtime, exchange: str, equity: float) -> float:
    """Return today's (UTC) change in equity: the first equity seen today is the baseline."""
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    key = f"{rt.keyspace().prefix}fleet:equity:{exchange}:{day}"
    client = rt.redis_client()
    client.set(key, repr(equity), nx=True, ex=3 * 86400)
    return equity - float(client.get(key) or equity)  # type: ignore[arg-type]


async def _risk_state(rt: Runtime, exchange: str, symbol: str) -> risk_lib.RiskState:
    client = rt.exchange_client()
    # together: the ticker and balance reads each wait for their batch to close
    ticker_answer, balance_answer, open_answer = await asyncio.gather(
        client.resilient_request(exchange, "fetch_ticker", {"symbol": symbol}, FRESH),
        client.resilient_request(exchange, "fetch_balance", {}, FRESH),
        client.resilient_request(exchange, "fetch_open_orders", {"symbol": symbol}, FRESH),
    )
    ticker, balance, opened = ticker_answer.data, balance_answer.data, open_answer.data
    pnl = daily_pnl(rt, exchange, await account_equity(rt, exchange, balance))
    base = symbol.split("/", maxsplit=1)[0]
    return risk_lib.RiskState(
        market_price=float(ticker["last"]),
        position=float((balance.get("free") or {}).get(base) or 0.0),
        open_orders=len(opened),
        daily_pnl=pnl,
        kill_switch=bool(rt.redis_client().exists(rt.keyspace().kill_switch())),
    )


async def execute(rt: Runtime, run_id: str, exchange: str, symbol: str) -> dict[str, Any]:
    """Check the plan against the risk guard and place at most one order for it.

    Idempotent: the client order id is derived from the run and the plan, and an order with
    that id is looked up before anything is sent, so a redelivered task finds its order.
    """
    config = rt.config()
    plan = TradePlan.model_validate(load(rt, run_id, exchange, symbol, "plan"))
    outcome: dict[str, Any] = {"action": plan.action, "mode": config.trading.mode}
    if plan.action == "hold":
        outcome["risk"] = {"approved": False, "reasons": ["hold"]}
        save(rt, run_id, exchange, symbol, "execution", data=outcome)
        return outcome
    with request_priority(Priority.HIGH):  # the pools' high-priority reserve is for this
        state = await _risk_state(rt, exchange, symbol)
    decision = risk_lib.check(plan, config.trading.risk, state)
    outcome["risk"] = {
        "approved": decision.approved,
        "size": decision.size,
        "reasons": decision.reasons,
    }
    if decision.approved:
        with (
            span("order", exchange=exchange, symbol=symbol, side=plan.action) as current,
            request_priority(Priority.HIGH),
        ):
            outcome["order"] = await _place(rt, run_id, exchange, plan, decision.size)
            current.set_attributes(
                {
                    "client_order_id": str(outcome["order"].get("clientOrderId")),
                    "outcome": str(outcome["order"].get("status")),
                }
            )
        emit("order", exchange=exchange, outcome=str(outcome["order"].get("status")))
    else:
        emit("risk.rejected", reason=decision.reasons[0].split(" ")[0] if decision.reasons else "")
    save(rt, run_id, exchange, symbol, "execution", data=outcome)
    return outcome


async def _place(
    rt: Runtime, run_id: str, exchange: str, plan: TradePlan, size: float
) -> dict[str, Any]:
    client = rt.exchange_client()
    cid = client_order_id(run_id, exchange, plan.symbol, plan.action)
    config = rt.config()
    if config.trading.mode == "paper" and not config.exchanges[exchange].sandboxed:
        # paper trading against a real exchange: simulate the fill, send nothing
        price = plan.entry or 0.0
        return {
            "id": None,
            "clientOrderId": cid,
            "status": "simulated",
            "side": plan.action,
            "amount": size,
            "filled": size,
            "average": price,
            "cost": size * price,
            "source": "paper",
        }
    existing = await client.gateway.find_order(exchange, plan.symbol, cid)
    if existing is not None:
        log.info(
            "run %s: order %s already exists (redelivered task); not placing again", run_id, cid
        )
        return _order_summary(existing, "found")
    market = client.gateway.instance(exchange)
    await market.load_markets()
    amount = float(market.amount_to_precision(plan.symbol, size))
    answer = await client.resilient_request(
        exchange,
        "create_order",
        {
            "symbol": plan.symbol,
            "type": "market",
            "side": plan.action,
            "amount": amount,
            "params": {"clientOrderId": cid},
        },
        FRESH,
    )
    return _order_summary(answer.data, answer.source)


def _order_summary(order: dict[str, Any], source: str) -> dict[str, Any]:
    keys = ("id", "clientOrderId", "status", "side", "amount", "filled", "average", "cost")
    return {**{k: order.get(k) for k in keys}, "source": source}
