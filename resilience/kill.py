"""The kill switch: stop every new order, cancel the fleet's open orders, flatten on request.

:func:`kill` sets ``fleet:kill_switch`` (the order gate then refuses every create and edit,
``resilience/orders.py``), cancels every open order of the fleet (client order id prefix
``cai``) on every configured exchange, over the watched symbols and the ledger's positions,
through the fleet's client and the gate (cancels pass it), and with ``flatten`` closes every
open position of the ledger at market with :func:`resilience.exits.close_position` (an exit:
reduce-only, the gate lets it out with the switch on). :func:`kill_off` clears the switch.

A position's protection (its exchange stop/take-profit list) is not cancelled by a kill
without ``flatten``: it only reduces risk, and the fleet watch would place it again. With
``flatten`` the close cancels it before the position is sold.

Both are idempotent: a second kill finds nothing open and nothing held, and says so. Each
call appends one entry to ``fleet:kill:audit`` (who, when, what was cancelled and closed,
what failed).

Warning: an order that passed the gate's guard just before the switch was set may still
reach the exchange after the cancel pass; a second kill (idempotent) cancels or closes it.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from core.errors import CryptoAIError
from resilience.exits import close_position
from resilience.fallback import FallbackConfig
from resilience.order_request import order_mode

if TYPE_CHECKING:
    from resilience.client import ResilientAPIClient

log = logging.getLogger(__name__)

#: The prefix of every client order id the fleet makes (``ExchangeProfile``, the execution
#: stage, the exits): orders without it are not the fleet's and are left alone.
FLEET_PREFIX = "cai"
#: Account state: never from the cache.
FRESH = FallbackConfig(cache_enabled=False, timeout=15.0)
AUDIT_LENGTH = 10_000


@dataclass
class KillOutcome:
    """What one kill did: the switch before, the orders cancelled, the positions closed."""

    who: str
    was_on: bool
    cancelled: list[dict[str, Any]] = field(default_factory=list)
    closed: list[dict[str, Any]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def operator() -> str:
    """Return who runs this process: ``user@host pid``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in a container
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


async def kill(client: ResilientAPIClient, *, flatten: bool = False, who: str) -> KillOutcome:
    """Set the kill switch, cancel the fleet's open orders, close positions when ``flatten``."""
    redis, keys = client.clients.aio(), client.keys
    stamp = json.dumps({"by": who, "at": time.time(), "flatten": flatten})
    was_on = not await redis.set(keys.kill_switch(), stamp, nx=True)
    outcome = KillOutcome(who, was_on)
    for exchange in client.config.exchanges:
        # paper orders never rest on a real exchange, and its real account is not the fleet's
        if order_mode(client, exchange) != "paper":
            await _cancel_open(client, exchange, outcome)
        if flatten:
            await _flatten(client, exchange, outcome, who)
    await _audit(client, "flatten" if flatten else "kill", outcome)
    return outcome


async def kill_off(client: ResilientAPIClient, *, who: str) -> bool:
    """Clear the kill switch; return whether it was on. Audited."""
    was_on = bool(await client.clients.aio().delete(client.keys.kill_switch()))
    await _audit(client, "off", KillOutcome(who, was_on))
    return was_on


async def _symbols(client: ResilientAPIClient, exchange: str) -> list[str]:
    held = [p.symbol for p in await client.orders.ledger.apositions(exchange)]
    return sorted({*client.config.watched(exchange), *held})


async def _protective_ids(client: ResilientAPIClient, exchange: str) -> set[str]:
    found: set[str] = set()
    for position in await client.orders.ledger.apositions(exchange):
        found.update(str(i) for i in (position.protection or {}).get("order_ids") or [])
    return found


async def _cancel_open(client: ResilientAPIClient, exchange: str, outcome: KillOutcome) -> None:
    protective = await _protective_ids(client, exchange)
    for symbol in await _symbols(client, exchange):
        try:
            answer = await client.resilient_request(
                exchange, "fetch_open_orders", {"symbol": symbol}, FRESH
            )
        except CryptoAIError as error:
            outcome.failed.append(f"{exchange} {symbol}: open orders unread: {error}")
            continue
        for order in answer.data or []:
            cid = str(order.get("clientOrderId") or "")
            if not cid.startswith(FLEET_PREFIX) or cid in protective:
                continue
            try:
                await client.resilient_request(
                    exchange, "cancel_order", {"id": order["id"], "symbol": symbol}, FRESH
                )
            except CryptoAIError as error:
                outcome.failed.append(f"{exchange} {symbol}: cancel {cid} failed: {error}")
                continue
            outcome.cancelled.append(
                {
                    "exchange": exchange,
                    "symbol": symbol,
                    "id": order.get("id"),
                    "client_order_id": cid,
                    "side": order.get("side"),
                    "type": order.get("type"),
                    "amount": order.get("amount"),
                    "price": order.get("price"),
                }
            )


async def _flatten(
    client: ResilientAPIClient, exchange: str, outcome: KillOutcome, who: str
) -> None:
    for position in await client.orders.ledger.apositions(exchange):
        symbol = position.symbol
        try:
            order = await close_position(client, exchange, symbol, "kill", origin=f"kill:{who}")
        except CryptoAIError as error:
            outcome.failed.append(f"{exchange} {symbol}: close failed: {error}")
            continue
        if order is None:  # closed meanwhile (a protective leg, the fleet watch)
            continue
        outcome.closed.append(
            {
                "exchange": exchange,
                "symbol": symbol,
                "side": position.side,
                "amount": position.amount,
                "entry": position.entry,
                "client_order_id": order.get("clientOrderId"),
                "filled": order.get("filled"),
                "average": order.get("average"),
                "status": order.get("status"),
            }
        )


async def _audit(client: ResilientAPIClient, action: str, outcome: KillOutcome) -> None:
    entry = {
        "at": repr(time.time()),
        "action": action,
        "by": outcome.who,
        "was_on": "1" if outcome.was_on else "0",
        "cancelled": json.dumps(outcome.cancelled),
        "closed": json.dumps(outcome.closed),
        "failed": json.dumps(outcome.failed),
    }
    await client.clients.aio().xadd(
        client.keys.kill_audit(), cast(Any, entry), maxlen=AUDIT_LENGTH, approximate=True
    )
    log.warning(
        "kill switch %s by %s: %d cancelled, %d closed, %d failed",
        action,
        outcome.who,
        len(outcome.cancelled),
        len(outcome.closed),
        len(outcome.failed),
    )
