"""One order write as the order gate reads it, and what the gate answered.

:meth:`OrderRequest.parse` reads a ccxt-style write (``create_order`` params and friends)
once; the execution stage builds one from its plan, with the plan's deadline and entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from core.errors import InvalidRequestError

if TYPE_CHECKING:
    from resilience.client import ResilientAPIClient

Mode = Literal["paper", "sandbox", "live"]


@dataclass(frozen=True)
class OrderRequest:
    """One order write as the gate reads it (built once from the caller's params)."""

    exchange: str
    endpoint: str
    symbol: str = ""
    side: str | None = None
    type: str | None = None
    amount: float | None = None
    price: float | None = None
    #: The price the order was decided at (a plan's entry): checked against the market.
    reference: float | None = None
    client_order_id: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    origin: str = "api"
    decided_at: datetime | None = None
    valid_until: datetime | None = None
    resize: bool = False

    @classmethod
    def parse(cls, exchange: str, endpoint: str, params: dict[str, Any]) -> OrderRequest:
        """Read a ccxt-style write (``create_order`` params and friends); raise if unusable."""
        extra = dict(params.get("params") or {})
        cid = extra.get("clientOrderId") or extra.get("newClientOrderId")
        request = cls(
            exchange=exchange,
            endpoint=endpoint,
            symbol=str(params.get("symbol") or ""),
            side=params.get("side"),
            type=params.get("type"),
            amount=_number(params.get("amount"), "amount"),
            price=_number(params.get("price"), "price"),
            client_order_id=str(cid) if cid else None,
            params=dict(params),
        )
        if endpoint in ("create_order", "edit_order"):
            missing = [f for f in ("symbol", "side", "type", "amount") if not params.get(f)]
            if missing:
                raise InvalidRequestError(f"{endpoint} needs {', '.join(missing)}")
            if request.side not in ("buy", "sell"):
                raise InvalidRequestError(f"side must be buy or sell, got {request.side!r}")
        return request

    def ccxt_params(self, amount: float, cid: str, field: str = "clientOrderId") -> dict[str, Any]:
        """Return the ccxt call's params with the amount and client order id the gate chose.

        ``field`` is where the exchange's ccxt class reads the id (its profile says); the
        id is kept under ``clientOrderId`` too, where reconciliation reads it.
        """
        extra = {**dict(self.params.get("params") or {}), "clientOrderId": cid, field: cid}
        extra.pop("newClientOrderId", None)
        return {**self.params, "amount": amount, "params": extra}


@dataclass
class GateAnswer:
    """What the gate did: the order (or None), how it was served, and the guard's verdict."""

    approved: bool
    order: dict[str, Any] | None
    source: str
    mode: Mode
    reasons: list[str] = field(default_factory=list)
    size: float | None = None


def _number(value: Any, name: str) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidRequestError(f"{name} must be a number, got {value!r}") from None


def order_mode(client: ResilientAPIClient, exchange: str) -> Mode:
    """Return what an order on ``exchange`` does: simulated (paper), sandbox, or live."""
    settings = client.config.exchanges[exchange]
    if settings.sandboxed:
        return "sandbox"
    return "live" if client.config.trading.mode == "live" else "paper"


def summary(order: dict[str, Any]) -> dict[str, Any]:
    """Return the fields of an order the fleet records."""
    keys = ("id", "clientOrderId", "status", "side", "amount", "filled", "average", "cost")
    return {k: order.get(k) for k in keys}
