"""One paper order as Binance reports it (``GET /api/v3/order``), shared by every dialect."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sandbox.order_kinds import PRICED_KINDS, STOP_KINDS


@dataclass
class Order:
    """One order as Binance reports it (quantities in the base asset)."""

    order_id: int
    client_order_id: str
    account: str
    symbol: str
    side: str
    type: str
    time_in_force: str
    price: float
    orig_qty: float
    executed_qty: float = 0.0
    quote_qty: float = 0.0
    status: str = "NEW"
    time_ms: int = 0
    update_ms: int = 0
    locked: float = 0.0
    fills: list[dict[str, Any]] = field(default_factory=list)
    stop_price: float = 0.0
    order_list_id: int = -1
    #: When a stop order fired (ms); -1 while it waits. Other kinds work from the start.
    working_ms: int = -1

    @property
    def is_open(self) -> bool:
        """Return True while the order can still fill."""
        return self.status in ("NEW", "PARTIALLY_FILLED")

    @property
    def is_pending(self) -> bool:
        """Return True for an open stop order that has not fired yet (it is off the book)."""
        return self.type in STOP_KINDS and self.working_ms < 0 and self.is_open

    @property
    def is_priced(self) -> bool:
        """Return True if the order executes as a limit order at ``price``."""
        return self.type in PRICED_KINDS

    def report(self) -> dict[str, Any]:
        """Return the order as Binance's GET /api/v3/order shows it."""
        return {
            "symbol": self.symbol,
            "orderId": self.order_id,
            "orderListId": self.order_list_id,
            "clientOrderId": self.client_order_id,
            "price": f"{self.price:.8f}",
            "origQty": f"{self.orig_qty:.8f}",
            "executedQty": f"{self.executed_qty:.8f}",
            "cummulativeQuoteQty": f"{self.quote_qty:.8f}",
            "status": self.status,
            "timeInForce": self.time_in_force,
            "type": self.type,
            "side": self.side,
            "stopPrice": f"{self.stop_price:.8f}",
            "icebergQty": "0.00000000",
            "time": self.time_ms,
            "updateTime": self.update_ms,
            "isWorking": not self.is_pending,
            "workingTime": self.working_time,
            "origQuoteOrderQty": "0.00000000",
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }

    @property
    def working_time(self) -> int:
        """Return Binance's ``workingTime``: when the order went on the book, -1 if not yet."""
        if self.type in STOP_KINDS:
            return self.working_ms
        return self.time_ms
