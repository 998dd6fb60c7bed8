"""Paper mode against a real exchange: a fill at the real book, nothing sent.

The fill takes the touch (the ask for a buy, the bid for a sell), moved
``trading.paper.slippage_bps`` against the order, and pays ``trading.paper.fee_rate`` of its
cost in the quote currency. The order gate applies it to the paper wallet (the ledger,
``resilience/ledger.py``), which refuses what the wallet cannot pay.
"""

from __future__ import annotations

from typing import Any

from core.config import PaperConfig
from core.errors import OrderRefusedError
from resilience.order_request import OrderRequest


def simulated_fill(
    request: OrderRequest,
    cid: str,
    size: float,
    ticker: dict[str, Any],
    paper: PaperConfig | None = None,
) -> dict[str, Any]:
    """Return a paper fill at the touch, with the configured slippage and fee."""
    paper = paper or PaperConfig()
    touch = ticker.get("ask") if request.side == "buy" else ticker.get("bid")
    touch = float(touch or ticker.get("last") or 0.0)
    if request.type == "limit" and request.price is not None:
        marketable = touch <= request.price if request.side == "buy" else touch >= request.price
        if not marketable:  # no paper book keeps resting orders: say so, fill nothing
            raise OrderRefusedError(
                f"paper mode: a {request.side} limit at {request.price:g} would rest (the touch "
                f"is {touch:g}); paper mode fills marketable orders only"
            )
    slip = paper.slippage_bps / 10_000
    price = touch * (1 + slip) if request.side == "buy" else touch * (1 - slip)
    if request.type == "limit" and request.price is not None:  # a limit never fills worse
        price = min(price, request.price) if request.side == "buy" else max(price, request.price)
    cost = size * price
    quote = request.symbol.split("/")[-1].split(":")[0]
    return {
        "id": None,
        "clientOrderId": cid,
        "status": "simulated",
        "side": request.side,
        "amount": size,
        "filled": size,
        "average": price,
        "cost": cost,
        "fee": {"cost": cost * paper.fee_rate, "currency": quote},
    }
