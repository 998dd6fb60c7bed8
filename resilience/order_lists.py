"""A position's protective order list on the exchange (Binance OCO): names, reads, legs.

The list and its two legs are named by the position (its ``opened_at`` and plan run), its
latest fill and a round (``protection_ids``), so every worker names the same list for the
same amount, and a replacement of a list that is gone takes the next round. Reading a list
(``GET /api/v3/orderList`` by its client order id, weight 4) and its legs (by their client
order ids, weight 4 each) is all this module does; placing, settling and replacing them is
``resilience/exits.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agents.orders import client_order_id
from core.errors import CryptoAIError
from resilience.fallback import FallbackConfig
from resilience.ledger import Fill, Position, fill_from_order

if TYPE_CHECKING:
    from resilience.client import ResilientAPIClient

OCO_ENDPOINT = "POST /api/v3/orderList/oco"
CANCEL_LIST_ENDPOINT = "DELETE /api/v3/orderList"
#: Account state: never from the cache.
FRESH = FallbackConfig(cache_enabled=False, timeout=15.0)
#: How many lists may replace one that is gone, for the same amount, before the watch does.
MAX_ROUNDS = 10
#: Binance's order list statuses while a leg can still execute.
EXECUTING = ("EXECUTING",)


def position_order_id(client: ResilientAPIClient, position: Position, action: str) -> str:
    """Return the client order id of ``action`` on ``position`` (the same for every worker)."""
    length = client.profile(position.exchange).client_order_length
    identity = f"{position.opened_at}|{position.run_id}"
    return client_order_id(identity, position.exchange, position.symbol, action, length)


def protection_ids(client: ResilientAPIClient, position: Position, round_: int = 0) -> list[str]:
    """Return the client order ids of the OCO protecting ``position`` as it is now.

    ``[list, take-profit leg, stop leg]``, named by the position, its latest fill and the
    round (0 for the first list of this amount), so an add (a new fill) names a new list,
    a redelivery the same one, and the replacement of a list that is gone the next round.
    """
    version = position.fills[-1] if position.fills else ""
    if round_:
        version = f"{version}|round{round_}"
    return [
        position_order_id(client, position, f"protect|{version}|{leg}")
        for leg in ("list", "tp", "sl")
    ]


def protection_round(client: ResilientAPIClient, position: Position) -> int | None:
    """Return the round of the position's exchange protection; None when there is none or
    it protects another amount (the position changed since)."""
    protection = position.protection or {}
    stored = list(protection.get("order_ids") or [])[:1]
    if not stored or protection.get("kind") != "exchange":
        return None
    for round_ in range(MAX_ROUNDS + 1):
        if protection_ids(client, position, round_)[:1] == stored:
            return round_
    return None


def market_id(symbol: str) -> str:
    """Return Binance's market id of a unified spot symbol (``ETH/USDT`` -> ``ETHUSDT``)."""
    return symbol.split(":", maxsplit=1)[0].replace("/", "")


async def order_list(
    client: ResilientAPIClient, exchange: str, list_cid: str
) -> dict[str, Any] | None:
    """Return the exchange's order list with this client id (Binance), or None."""
    try:
        answer = await client.resilient_request(
            exchange, "privateGetOrderList", {"params": {"origClientOrderId": list_cid}}, FRESH
        )
    except CryptoAIError as error:
        if client.gateway.not_found(exchange, error):
            return None
        raise
    return dict(answer.data) if answer.data else None


@dataclass(frozen=True)
class Leg:
    """One leg of a protection list, as the exchange has it (None: it has no such order)."""

    name: str
    client_order_id: str
    order: dict[str, Any] | None
    fill: Fill | None

    def as_dict(self) -> dict[str, Any]:
        """Return what a summary shows of the leg."""
        order = self.order or {}
        return {
            "leg": self.name,
            "client_order_id": self.client_order_id,
            "id": str(order.get("id") or ""),
            "status": str(order.get("status") or "missing"),
            "filled": float(order.get("filled") or 0.0),
        }


async def read_legs(client: ResilientAPIClient, position: Position, ids: list[str]) -> list[Leg]:
    """Return both legs of the list named ``ids`` (take-profit first), read by client id."""
    legs = []
    for cid, name in ((ids[1], "take_profit"), (ids[2], "stop_loss")):
        order = await client.find_order(position.exchange, position.symbol, cid)
        fill = fill_from_order(position.symbol, order or {})
        legs.append(Leg(name, cid, dict(order) if order else None, fill))
    return legs
