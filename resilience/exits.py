"""Protective exits: close a position at market, protect it, and repair its protection.

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
- :func:`repair` makes sure one open position is protected, for reconciliation
  (``tasks/reconcile.py``) and the fleet watch (``resilience/watch.py``): it protects what
  is unprotected (a crash between a fill and its protection), settles a list whose leg
  filled (the fill applied to the ledger once, by the leg's client order id; the exit
  recorded) and replaces a list that is gone from the exchange without a fill (cancelled,
  expired, rejected, or no such list).

A list's client order ids are named by the position, its latest fill and a **round**: the
replacement of a list that is gone takes the next round (the gate's settled claim of the
old names would answer with the old, dead list). After ``MAX_ROUNDS`` replacements for the
same amount the fleet watch protects the position instead.

Warning: an amount below the market's precision left after an exit (a fee taken in the base
asset) cannot be sold: it is written off in the ledger at the exit's price.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from core.errors import CryptoAIError, OrderRefusedError
from resilience.ledger import Fill, Position
from resilience.order_lists import (
    CANCEL_LIST_ENDPOINT,
    EXECUTING,
    FRESH,
    MAX_ROUNDS,
    OCO_ENDPOINT,
    Leg,
    market_id,
    order_list,
    position_order_id,
    protection_ids,
    protection_round,
    read_legs,
)
from resilience.order_request import OrderRequest, order_mode

if TYPE_CHECKING:
    from resilience.client import ResilientAPIClient

log = logging.getLogger(__name__)


def exit_order_id(client: ResilientAPIClient, position: Position) -> str:
    """Return the client order id that closes ``position`` (the same for every worker)."""
    return position_order_id(client, position, "exit")


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


async def protect(
    client: ResilientAPIClient, exchange: str, symbol: str, *, gone: bool = False
) -> dict[str, Any] | None:
    """Protect the open position of ``symbol`` (see the module docstring); return how.

    None when there is nothing to protect (no position, or a plan without exits).
    ``gone``: the position's exchange list is no longer on the exchange (cancelled,
    expired, no such list): a new one is placed under the next round's names.
    """
    ledger = client.orders.ledger
    position = await ledger.aposition(exchange, symbol)
    if position is None or not (position.stop_loss or position.take_profit):
        return None
    current = position.protection or {}
    if not _native(client, position):
        if current.get("kind") == "exchange" and not gone:
            await cancel_protection(client, position)
        return await _watched(client, position)
    round_ = protection_round(client, position)
    if round_ is not None and not gone:
        return current  # this amount is protected already
    if current.get("kind") == "exchange" and not gone:
        await cancel_protection(client, position)  # the position grew: replace it whole
    next_round = round_ + 1 if gone and round_ is not None else 0
    ids = protection_ids(client, position, next_round)
    if next_round > MAX_ROUNDS:
        log.warning("%s %s: %d lists gone; the watch protects it", exchange, symbol, round_)
        placed: bool | None = False
    else:
        placed = await _placed(client, position, ids)
    if placed is None:
        return None
    return {"kind": "exchange", "order_ids": ids} if placed else await _watched(client, position)


async def _placed(client: ResilientAPIClient, position: Position, ids: list[str]) -> bool | None:
    """Place the list ``ids`` and record it; False when it is not placed, None for dust."""
    try:
        placed = await _place_oco(client, position, ids)
    except CryptoAIError as error:
        name = f"{position.exchange} {position.symbol}"
        log.warning("%s: OCO not placed (%s); the watch protects it", name, error)
        return False
    if placed:
        await client.orders.ledger.aset_protection(
            position.exchange, position.symbol, "exchange", ids
        )
    return placed


async def _watched(client: ResilientAPIClient, position: Position) -> dict[str, Any]:
    """Record that the fleet watch protects ``position``; return that protection."""
    if (position.protection or {}).get("kind") != "watch":
        await client.orders.ledger.aset_protection(position.exchange, position.symbol, "watch")
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
        "symbol": market_id(symbol),
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


async def cancel_protection(client: ResilientAPIClient, position: Position) -> None:
    """Cancel the position's exchange protection and mark it gone.

    A list that is no longer open (a leg filled) is settled instead: the leg's fill is
    applied to the ledger (once), so the sell that follows sees what is really held.
    """
    protection = position.protection or {}
    ids = list(protection.get("order_ids") or [])
    ledger = client.orders.ledger
    if protection.get("kind") == "exchange" and ids:
        params = {"symbol": market_id(position.symbol), "listClientOrderId": ids[0]}
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

    Returns None while the list is still open, ``take_profit``/``stop_loss`` for the leg
    that filled, ``expired`` if none did, ``missing`` when the exchange has no such list.
    """
    ids = list((position.protection or {}).get("order_ids") or [])
    if len(ids) < 3:
        return None
    listed = await order_list(client, position.exchange, ids[0])
    if listed is None:
        return "missing"
    if listed.get("listOrderStatus") in EXECUTING:
        return None
    legs = await _settle_legs(client, position, ids)
    return next((leg.name for leg in legs if leg.fill is not None), "expired")


async def _settle_legs(client: ResilientAPIClient, position: Position, ids: list[str]) -> list[Leg]:
    """Read both legs of a finished list; apply the fill of the one that filled (once)."""
    ledger, exchange, symbol = client.orders.ledger, position.exchange, position.symbol
    legs = await read_legs(client, position, ids)
    for leg in legs:
        if leg.fill is None:
            continue
        price = leg.fill.average
        await ledger.aapply_fill(exchange, symbol, leg.fill)
        await _write_off_dust(client, exchange, symbol, price, leg.client_order_id)
        if await ledger.aposition(exchange, symbol) is None:
            record = {"reason": leg.name, "client_order_id": leg.client_order_id}
            await ledger.arecord_exit(
                exchange, symbol, {**record, "origin": "exchange", "price": price}
            )
    return legs


async def repair(
    client: ResilientAPIClient, position: Position, open_ids: Collection[str] | None = None
) -> dict[str, Any] | None:
    """Make sure ``position`` is protected; return what was done (None: nothing needed).

    ``open_ids``: the client order ids open on the exchange for the position's symbol, when
    the caller has read them (a list whose legs are open then costs no request); otherwise
    the list is read by its client order id (Binance ``GET /api/v3/orderList``, weight 4).
    The answer's ``action``: ``protected`` (there was no protection), ``replaced`` (the
    amount changed, or the list is gone without a fill), ``settled`` (a leg filled: its fill
    is applied to the ledger once, ``other`` is the other leg's status; what is left of the
    position, if anything, is protected again); ``legs``: both legs as the exchange has them.
    """
    if not (position.stop_loss or position.take_profit):
        return None
    exchange, symbol = position.exchange, position.symbol
    protection = position.protection or {}
    if not protection.get("kind"):
        how = await protect(client, exchange, symbol)
        return _repaired(position, "protected", how, "no protection recorded")
    ids = list(protection.get("order_ids") or [])
    if protection["kind"] != "exchange" or len(ids) < 3:
        return None
    if protection_round(client, position) is None:
        how = await protect(client, exchange, symbol)
        return _repaired(position, "replaced", how, "the position's amount changed")
    if open_ids is not None and all(cid in open_ids for cid in ids[1:]):
        return None
    return await _repair_list(client, position, ids)


async def _repair_list(
    client: ResilientAPIClient, position: Position, ids: list[str]
) -> dict[str, Any] | None:
    """Read the position's list: settle it if a leg filled, replace it if it is gone."""
    listed = await order_list(client, position.exchange, ids[0])
    status = str((listed or {}).get("listOrderStatus") or "not on the exchange")
    if status in EXECUTING:
        return None
    legs = await _settle_legs(client, position, ids) if listed is not None else []
    filled = next((leg for leg in legs if leg.fill is not None), None)
    if filled is not None:
        return await _settled(client, position, filled, legs)
    how = await protect(client, position.exchange, position.symbol, gone=True)
    states = ", ".join(f"{leg.name} {leg.as_dict()['status']}" for leg in legs)
    why = f"list {ids[0]} {status}" + (f": {states}" if states else "")
    return {**_repaired(position, "replaced", how, why), "legs": [x.as_dict() for x in legs]}


async def _settled(
    client: ResilientAPIClient, position: Position, filled: Leg, legs: list[Leg]
) -> dict[str, Any]:
    """Return the summary of a settled list; protect what is left of the position."""
    ledger, exchange, symbol = client.orders.ledger, position.exchange, position.symbol
    how: dict[str, Any] | None = None
    if await ledger.aposition(exchange, symbol) is not None:  # a partial fill: the rest
        await ledger.aset_protection(exchange, symbol, None)
        how = await protect(client, exchange, symbol)
    other = next(leg.as_dict() for leg in legs if leg is not filled)
    fill = filled.fill
    return {
        **_repaired(position, "settled", how, f"{filled.name} filled on the exchange"),
        "leg": filled.name,
        "client_order_id": filled.client_order_id,
        "filled": fill.filled if fill else 0.0,
        "price": fill.average if fill else 0.0,
        "other": {"client_order_id": other["client_order_id"], "status": other["status"]},
        "legs": [leg.as_dict() for leg in legs],
    }


def _repaired(
    position: Position, action: str, how: dict[str, Any] | None, why: str
) -> dict[str, Any]:
    old = list((position.protection or {}).get("order_ids") or [])
    return {
        "symbol": position.symbol,
        "action": action,
        "kind": (how or {}).get("kind"),
        "order_ids": list((how or {}).get("order_ids") or []),
        "list": old[0] if old else "",
        "why": why,
    }
