"""The fleet watch's one pass over the open positions (``tasks/protection.py`` runs it).

For each open position of every configured exchange, :func:`watch_one`:

- closes a position that outlived its plan's horizon (``horizon``);
- protects a position with exits but no protection (a crash between a fill and its
  protection), or whose exchange protection is for another amount (the position changed);
- closes at market a watched position (``kind: watch``) whose last price crossed its stop or
  take-profit;
- reads an exchange protection's list when its price crossed an exit or every
  ``trading.protection.list_check_seconds``: a list whose leg filled is settled (the fill
  applied to the ledger once), one gone without a fill is replaced
  (``resilience/exits.py`` ``repair``).

Every action is idempotent (an exit is named by its position, a protection by its position
and amount), so two passes at once act once. Reconciliation (``tasks/reconcile.py``) makes
the same repairs when no watch runs (``resilience/exits.py`` ``repair``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from agents.strategy import horizon_seconds
from core.errors import CryptoAIError
from resilience.exits import close_position, protect, repair
from resilience.fallback import FallbackConfig
from resilience.ledger import Position
from resilience.order_lists import protection_round

if TYPE_CHECKING:
    from resilience.client import ResilientAPIClient

log = logging.getLogger(__name__)


def expired(position: Position, now: datetime | None = None) -> bool:
    """Return True when the position has outlived its plan's horizon."""
    seconds = horizon_seconds(position.horizon)
    if seconds is None or not position.opened_at:
        return False
    opened = datetime.fromisoformat(position.opened_at)
    return (now or datetime.now(UTC)) >= opened + timedelta(seconds=seconds)


@dataclass
class WatchPass:
    """What one pass of the fleet watch did, per ``exchange symbol``."""

    actions: dict[str, str]
    errors: dict[str, str]


async def watch(client: ResilientAPIClient) -> WatchPass:
    """Run one pass of the fleet watch over every exchange's open positions."""
    done = WatchPass({}, {})
    ledger = client.orders.ledger
    for exchange in client.config.exchanges:
        for position in await ledger.apositions(exchange):
            name = f"{exchange} {position.symbol}"
            try:
                action = await watch_one(client, position)
            except CryptoAIError as error:
                log.warning("protection watch: %s: %s", name, error)
                done.errors[name] = f"{type(error).__name__}: {error}"
                continue
            if action:
                done.actions[name] = action
    return done


async def watch_one(client: ResilientAPIClient, position: Position) -> str | None:
    """Check one open position; return what was done (None: nothing)."""
    exchange, symbol = position.exchange, position.symbol
    kind = (position.protection or {}).get("kind")
    if expired(position):
        await close_position(client, exchange, symbol, "horizon", origin="watch")
        action: str | None = "horizon"
    elif not (position.stop_loss or position.take_profit):
        action = None
    elif kind is None or (kind == "exchange" and protection_round(client, position) is None):
        # unprotected (a crash after the fill), or the amount changed: protect it whole
        how = await protect(client, exchange, symbol)
        action = f"protected:{(how or {}).get('kind')}"
    else:
        action = await _check_price(client, position, str(kind))
    return action


async def _check_price(client: ResilientAPIClient, position: Position, kind: str) -> str | None:
    """Close a watched position whose price crossed an exit; check an exchange's legs."""
    last = await _last(client, position.exchange, position.symbol)
    if last is None:
        return None
    crossed = _crossed(position, last)
    if kind != "watch":
        return await _check_exchange(client, position, crossed is not None)
    if crossed is not None:
        origin = "watch"
        await close_position(client, position.exchange, position.symbol, crossed, origin=origin)
    return crossed


def _crossed(position: Position, last: float) -> str | None:
    if position.stop_loss and last <= position.stop_loss:
        return "stop_loss"
    if position.take_profit and last >= position.take_profit:
        return "take_profit"
    return None


async def _last(client: ResilientAPIClient, exchange: str, symbol: str) -> float | None:
    """Return the last price, fresh (shared by the fleet for a moment), or None if stale."""
    fresh = min(1.0, client.config.trading.protection.watch_seconds / 2)
    answer = await client.resilient_request(
        exchange, "fetch_ticker", {"symbol": symbol}, FallbackConfig(fresh_ttl=fresh)
    )
    if answer.stale or not answer.data:
        return None
    return float(answer.data["last"])


async def _check_exchange(
    client: ResilientAPIClient, position: Position, crossed: bool
) -> str | None:
    """Read the protection list when a leg may have filled: settle it, or replace it."""
    redis = client.clients.aio()
    key = client.keys.protection_checked(position.exchange)
    raw = await redis.hget(key, position.symbol)
    due = time.time() - float(raw or 0) >= client.config.trading.protection.list_check_seconds
    if not (crossed or due):
        return None
    await redis.hset(key, position.symbol, repr(time.time()))
    done = await repair(client, position)
    if done is None:
        return None
    return f"exchange:{done.get('leg') or done['action']}"
