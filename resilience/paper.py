"""Paper mode against a real exchange: a simulated fill at the book's touch, nothing sent."""

from __future__ import annotations

from typing import Any

from core.errors import OrderRefusedError
from resilience.order_request import OrderRequest


def simulated_fill(
    request: OrderRequest, cid: str, size: float, ticker: dict[str, Any]
) -> dict[str, Any]:
    """Return a paper fill at the touch (the ask for a buy, the bid for a sell)."""
    touch = ticker.get("ask") if request.side == "buy" else ticker.get("bid")
    price = float(touch or ticker.get("last") or 0.0)
    if request.type == "limit" and request.price is not None:
        marketable = price <= request.price if request.side == "buy" else price >= request.price
        if not marketable:  # no paper book keeps resting orders yet: say so, fill nothing
            raise OrderRefusedError(
                f"paper mode: a {request.side} limit at {request.price:g} would rest (the touch "
                f"is {price:g}); paper mode fills marketable orders only"
            )
    return {
        "id": None,
        "clientOrderId": cid,
        "status": "simulated",
        "side": request.side,
        "amount": size,
        "filled": size,
        "average": price,
        "cost": size * price,
    }
