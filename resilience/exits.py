"""Protective exits: close a position at market, protect it, and watch its stop and target.

Every write here passes the order gate (``resilience/orders.py``):

- :func:`close_position` sells the ledger's long position at market, reduce-only (never more
  than held), named by the position (its ``opened_at`` and plan run, and ``exit``), so two
  workers or a redelivery close it exactly once: the gate's client order id claim answers
  the second with the first's order. The gate cancels the position's exchange protection
  before the sell (its legs lock the amount), and the reason is recorded
  (``Ledger.exits``, and ``exit: <reason>`` in ``orders:audit``).
- :func:`protect` protects an open position whose plan carries a stop-loss and a
  take-profit: on an exchange whose profile has ``native_protection`` (Binance), outside
  paper mode, by one OCO sell of the whole amount (a ``LIMIT_MAKER`` take-profit above, a
  ``STOP_LOSS_LIMIT`` below); otherwise (and when the exchange refuses the OCO) by the
  fleet watch (``kind: watch``). A position that grew is protected again: the old list is
  cancelled and one for the whole amount placed.
- :func:`watch` is the fleet watch's one pass (``tasks/protection.py``): it protects what
  is unprotected (a crash between a fill and its protection), closes what crossed its
  stop or take-profit (``watch``) or outlived its horizon, and settles an exchange
  protection whose leg filled (the fill applied to the ledger once, the protection gone).

Warning: an amount below the market's precision left after an exit (a fee taken in the base
asset) cannot be sold: it is written off in the ledger at the exit's price.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from agents.orders import client_order_id
from agents.strategy import horizon_seconds
from core.errors import CryptoAIError, OrderRefusedError
from resilience.fallback import FallbackConfig
from resilience.ledger import Fill, Position, fill_from_order
from resilience.order_request import OrderRequest, order_mode

if TYPE_CHECKING:
    from resilience.client import ResilientAPIClient

log = logging.getLogger(__name__)

OCO_ENDPOINT = "POST /api/v3/orderList/oco"
CANCEL_LIST_ENDPOINT = "DELETE /api/v3/orderList"
#: Account state: never from the cache.
FRESH = FallbackConfig(cache_enabled=False, timeout=15.0)


def _identity(position: Position) -> str:
    return f"{position.opened_at}|{position.run_id}"


def _cid(client: ResilientAPIClient, position: Position, action: str) -> str:
    length = client.profile(position.exchange).client_order_length
    return client_order_id(_identity(position), position.exchange, position.symbol, action, length)


def exit_order_id(client: ResilientAPIClient, position: Position) -> str:
    """Return the client order id that closes ``position`` (the same for every worker)."""
    return _cid(client, position, "exit")


def protection_ids(client: ResilientAPIClient, position: Position) -> list[str]:
    """Return the client order ids of the OCO protecting ``position`` as it is now.

    ``[list, take-profit leg, stop leg]``, named by the position and its latest fill, so an
    add (a new fill) names a new list and a redelivery the same one.
    """
    version = position.fills[-1] if position.fills else ""
    return [_cid(client, position, f"protect|{version}|{leg}") for leg in ("list", "tp", "sl")]


def expired(position: Position, now: datetime | None = None) -> bool:
    """Return True when the position has outlived its plan's horizon."""
    seconds = horizon_seconds(position.horizon)
    if seconds is None or not position.opened_at:
        return False
    opened = datetime.fromisoformat(position.opened_at)
    return (now or datetime.now(UTC)) >= opened + timedelta(seconds=seconds)


def _market_id(symbol: str) -> str:
    return symbol.split(":", maxsplit=1)[0].replace("/", "")


async def close_position(
    client: ResilientAPIClient, exchange: str, symbol: str, reason: str, *, origin: str
) -> dict[str, Any] | None:
    """Close the ledger's open position of ``symbol`` at market; return the order.

    None when nothing is held (or another worker closed it meanwhile). Raises
    :class:`~core.errors.OrderRefusedError` when the gate refuses the exit.
    """
    ledger = client.orders.ledger
    position = await ledger.aposition(exchange, symbol)
    if position is None or position.side != "long":
        return None
    cid = exit_order_id(client, position)
    params = {"symbol": symbol, "type": "market", "side": "sell", "amount": position.amount}
    request = OrderRequest(
        exchange=exchange,
        endpoint="create_order",
        symbol=symbol,
        side="sell",
        type="market",
        amount=position.amount,
        client_order_id=cid,
        params=params,
        origin=origin,
    )
    answer = await client.orders.submit(request, exit_reason=reason)
    if not answer.approved or answer.order is None:
        if await ledger.aposition(exchange, symbol) is None:
            return None  # closed meanwhile (a protective leg, another worker)
        raise OrderRefusedError(
            f"{exchange} {symbol}: exit ({reason}) refused: {'; '.join(answer.reasons)}",
            answer.reasons,
        )
    order = {**answer.order, "source": answer.source}
    price = float(order.get("average") or 0.0)
    await _write_off_dust(client, exchange, symbol, price, cid)
    await ledger.arecord_exit(
        exchange,
        symbol,
        {"reason": reason, "client_order_id": cid, "origin": origin, "price": price},
    )
    log.info("%s %s closed (%s) by %s", exchange, symbol, reason, cid)
    return order


async def _write_off_dust(
    client: ResilientAPIClient, exchange: str, symbol: str, price: float, cid: str
) -> None:
    """Close what is left when it rounds to nothing at the market's amount precision."""
    ledger = client.orders.ledger
    left = await ledger.aposition(exchange, symbol)
    if left is None or price <= 0:
        return
    if not await dust(client, exchange, symbol, left.amount):
        return
    mode = order_mode(client, exchange)
    paper = client.config.trading.paper
    await ledger.aapply_fill(
        exchange,
        symbol,
        Fill(f"{cid}-dust", "sell", left.amount, price),
        mode=mode,
        wallet=dict(paper.starting_balances) if mode == "paper" else None,
    )


async def dust(client: ResilientAPIClient, exchange: str, symbol: str, amount: float) -> bool:
    """Return True when ``amount`` is below the market's amount step or minimum.

    False when the markets cannot be read (paper mode on an unreachable exchange).
    """
    try:
        markets = await client.markets(exchange)
    except CryptoAIError:
        return False
    market = markets.get(symbol) or {}
    step = (market.get("precision") or {}).get("amount") or 0.0
    least = ((market.get("limits") or {}).get("amount") or {}).get("min") or 0.0
    return amount < max(float(step), float(least)) * (1 - 1e-9)


def _native(client: ResilientAPIClient, position: Position) -> bool:
    return bool(
        client.profile(position.exchange).native_protection
        and order_mode(client, position.exchange) != "paper"
        and position.stop_loss
        and position.take_profit
    )


async def protect(client: ResilientAPIClient, exchange: str, symbol: str) -> dict[str, Any] | None:
    """Protect the open position of ``symbol`` (see the module docstring); return how.

    None when there is nothing to protect (no position, or a plan without exits).
    """
    ledger = client.orders.ledger
    position = await ledger.aposition(exchange, symbol)
    if position is None or not (position.stop_loss or position.take_profit):
        return None
    current = position.protection or {}
    if not _native(client, position):
        if current.get("kind") == "exchange":
            await cancel_protection(client, position)
        if current.get("kind") != "watch":
            await ledger.aset_protection(exchange, symbol, "watch")
        return {"kind": "watch"}
    ids = protection_ids(client, position)
    if current.get("kind") == "exchange" and list(current.get("order_ids") or [])[:1] == ids[:1]:
        return current  # this amount is protected already
    if current.get("kind") == "exchange":
        await cancel_protection(client, position)  # the position grew: replace it whole
    try:
        placed = await _place_oco(client, position, ids)
    except CryptoAIError as error:
        log.warning("%s %s: OCO not placed (%s); the watch protects it", exchange, symbol, error)
        placed = False
    if placed is None:
        return None
    if placed:
        await ledger.aset_protection(exchange, symbol, "exchange", ids)
        return {"kind": "exchange", "order_ids": ids}
    await ledger.aset_protection(exchange, symbol, "watch")
    return {"kind": "watch"}


async def _place_oco(client: ResilientAPIClient, position: Position, ids: list[str]) -> bool | None:
    """Place the OCO sell of the whole position; None when its amount is dust."""
    exchange, symbol = position.exchange, position.symbol
    if await dust(client, exchange, symbol, position.amount):
        await _write_off_dust(client, exchange, symbol, position.entry, ids[0])
        return None
    mode = order_mode(client, exchange)
    probe = client.request(exchange, "load_markets", {}, 15.0)
    amount = await client.writes.to_precision(probe, symbol, position.amount, mode)
    ex = client.gateway.instance(exchange)
    stop, target = float(position.stop_loss or 0), float(position.take_profit or 0)
    below = stop * (1 - client.config.trading.protection.stop_limit_bps / 10_000)
    params = {
        "symbol": _market_id(symbol),
        "side": "SELL",
        "quantity": ex.amount_to_precision(symbol, amount),
        "listClientOrderId": ids[0],
        "aboveType": "LIMIT_MAKER",
        "abovePrice": ex.price_to_precision(symbol, target),
        "aboveClientOrderId": ids[1],
        "belowType": "STOP_LOSS_LIMIT",
        "belowStopPrice": ex.price_to_precision(symbol, stop),
        "belowPrice": ex.price_to_precision(symbol, below),
        "belowTimeInForce": "GTC",
        "belowClientOrderId": ids[2],
    }
    request = OrderRequest(
        exchange=exchange,
        endpoint=OCO_ENDPOINT,
        symbol=symbol,
        side="sell",
        type="oco",
        amount=amount,
        price=target,
        client_order_id=ids[0],
        params=params,
        origin=f"protect:{position.run_id or ''}",
    )

    async def find() -> dict[str, Any] | None:
        return await order_list(client, exchange, ids[0])

    answer = await client.orders.protect(request, OCO_ENDPOINT, params, find)
    return answer.approved


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


async def cancel_protection(client: ResilientAPIClient, position: Position) -> None:
    """Cancel the position's exchange protection and mark it gone.

    A list that is no longer open (a leg filled) is settled instead: the leg's fill is
    applied to the ledger (once), so the sell that follows sees what is really held.
    """
    protection = position.protection or {}
    ids = list(protection.get("order_ids") or [])
    ledger = client.orders.ledger
    if protection.get("kind") == "exchange" and ids:
        params = {"symbol": _market_id(position.symbol), "listClientOrderId": ids[0]}
        try:
            await client.resilient_request(position.exchange, CANCEL_LIST_ENDPOINT, params, FRESH)
        except CryptoAIError as error:
            if not await settle_list(client, position):
                raise
            log.info("%s %s: protection %s was done already (%s)", *_names(position), error)
    await ledger.aset_protection(position.exchange, position.symbol, None)


def _names(position: Position) -> tuple[str, str, str]:
    ids = list((position.protection or {}).get("order_ids") or [""])
    return position.exchange, position.symbol, ids[0]


async def settle_list(client: ResilientAPIClient, position: Position) -> str | None:
    """Apply the fills of a finished protection list; return the leg that filled.

    Returns None while the list is still open (or unknown to the exchange: nothing filled),
    ``take_profit``/``stop_loss`` for the leg that filled, ``expired`` if none did.
    """
    ids = list((position.protection or {}).get("order_ids") or [])
    if len(ids) < 3:
        return None
    listed = await order_list(client, position.exchange, ids[0])
    if listed is None or listed.get("listOrderStatus") != "ALL_DONE":
        return None
    ledger, filled = client.orders.ledger, "expired"
    for leg, name in ((ids[1], "take_profit"), (ids[2], "stop_loss")):
        order = await client.find_order(position.exchange, position.symbol, leg)
        fill = fill_from_order(position.symbol, order or {})
        if fill is None:
            continue
        filled = name
        await ledger.aapply_fill(position.exchange, position.symbol, fill)
        await _write_off_dust(client, position.exchange, position.symbol, fill.average, leg)
        await ledger.arecord_exit(
            position.exchange,
            position.symbol,
            {"reason": name, "client_order_id": leg, "origin": "exchange", "price": fill.average},
        )
    return filled


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
    elif kind is None or (kind == "exchange" and _stale_ids(client, position)):
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


def _stale_ids(client: ResilientAPIClient, position: Position) -> bool:
    stored = list((position.protection or {}).get("order_ids") or [])
    return stored[:1] != protection_ids(client, position)[:1]


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
    """Read the protection list when a leg may have filled; settle it when done."""
    redis = client.clients.aio()
    key = client.keys.protection_checked(position.exchange)
    raw = await redis.hget(key, position.symbol)
    due = time.time() - float(raw or 0) >= client.config.trading.protection.list_check_seconds
    if not (crossed or due):
        return None
    await redis.hset(key, position.symbol, repr(time.time()))
    filled = await settle_list(client, position)
    if filled is None:
        return None
    if await client.orders.ledger.aposition(position.exchange, position.symbol) is not None:
        await client.orders.ledger.aset_protection(position.exchange, position.symbol, None)
    return f"exchange:{filled}"
