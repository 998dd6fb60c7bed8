"""The execution stage: a plan becomes at most one order, through the order gate.

The gate (``resilience/orders.py``) is the one mechanism every order of the fleet passes:
paper mode, the plan's deadline, the client order id claim, the risk guard, the audit
record, the fill applied to the position ledger (``resilience/ledger.py``). This stage
turns the plan into the gate's request, protects the position an entry opened or grew
(``resilience/exits.py``: an OCO on the exchange, or the fleet watch), and records the
outcome, with the symbol's position before and after it.
"""

from __future__ import annotations

from typing import Any

from agents.orders import client_order_id
from agents.types import TradePlan
from core.errors import CryptoAIError
from core.tracing import span
from exchanges.profiles import ExchangeProfile
from exchanges.request import request_priority
from ratelimit.pools import Priority
from resilience.client import ResilientAPIClient
from resilience.exits import protect
from resilience.orders import OrderRequest, PlanRef, order_mode
from resilience.position import Position
from tasks.context import Runtime
from tasks.stages import load, save


def order_request(
    run_id: str, exchange: str, plan: TradePlan, rules: ExchangeProfile
) -> OrderRequest:
    """Return the gate's request for a plan: a market order named by the decision."""
    params = {"symbol": plan.symbol, "type": "market", "side": plan.action, "amount": plan.size}
    return OrderRequest(
        exchange=exchange,
        endpoint="create_order",
        symbol=plan.symbol,
        side=plan.action,
        type="market",
        amount=plan.size,
        reference=plan.entry,
        client_order_id=client_order_id(
            run_id, exchange, plan.symbol, plan.action, rules.client_order_length
        ),
        params=params,
        origin=f"execution:{run_id}",
        decided_at=plan.decided_at,
        valid_until=plan.valid_until,
        resize=True,
    )


async def execute(rt: Runtime, run_id: str, exchange: str, symbol: str) -> dict[str, Any]:
    """Pass the plan through the order gate; record the verdict and the order.

    Idempotent: the client order id is derived from the run and the plan, and the gate
    claims it before anything is sent, so a redelivered or concurrent delivery of this task
    answers with the first one's order.
    """
    plan = TradePlan.model_validate(load(rt, run_id, exchange, symbol, "plan"))
    client = rt.exchange_client()
    # what an order here does: paper (simulated), sandbox or live (docs/ORDERS.md)
    outcome: dict[str, Any] = {"action": plan.action, "mode": order_mode(client, exchange)}
    ledger = client.orders.ledger
    before = await ledger.aposition(exchange, symbol)
    held = before.as_dict() if before else None
    if plan.action == "hold":
        outcome["risk"] = {"approved": False, "reasons": ["hold"]}
        outcome["position"] = {"before": held, "after": held}
        save(rt, run_id, exchange, symbol, "execution", data=outcome)
        return outcome
    request = order_request(run_id, exchange, plan, client.profile(exchange))
    opens = PlanRef(run_id, plan.stop_loss, plan.take_profit, plan.horizon)
    with (
        span("order", exchange=exchange, symbol=symbol, side=plan.action) as current,
        request_priority(Priority.HIGH),  # the pools' high-priority reserve is for this
    ):
        answer = await client.orders.submit(request, opens)
        current.set_attributes(
            {
                "client_order_id": str(request.client_order_id),
                "outcome": answer.source,
                "mode": answer.mode,
            }
        )
    outcome["risk"] = {"approved": answer.approved, "size": answer.size, "reasons": answer.reasons}
    if answer.approved and answer.order is not None:
        outcome["order"] = {**answer.order, "source": answer.source}
    after = await ledger.aposition(exchange, symbol)
    # grew now, or a redelivery whose first delivery filled and died before protecting
    if answer.approved and (_grew(before, after) or _bare(after)):
        outcome["protection"] = await _protect(client, exchange, symbol)
        after = await ledger.aposition(exchange, symbol)
    outcome["position"] = {
        "before": held,
        "after": after.as_dict() if after else None,
    }
    save(rt, run_id, exchange, symbol, "execution", data=outcome)
    return outcome


def _grew(before: Position | None, after: Position | None) -> bool:
    return after is not None and (before is None or after.amount > before.amount)


def _bare(position: Position | None) -> bool:
    """Return True for a position with exits in its plan and no protection recorded."""
    if position is None or not (position.stop_loss or position.take_profit):
        return False
    return not (position.protection or {}).get("kind")


async def _protect(client: ResilientAPIClient, exchange: str, symbol: str) -> dict[str, Any]:
    """Protect the position at once; a failure is recorded (the fleet watch repairs it)."""
    try:
        return await protect(client, exchange, symbol) or {"kind": None}
    except CryptoAIError as error:
        return {"kind": None, "error": f"{type(error).__name__}: {error}"}
