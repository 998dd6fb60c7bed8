"""Drift: where the position ledger and the exchange disagree, as reconciliation reports it.

Every item of a summary's ``drift`` has ``kind``, ``exchange``, ``symbol``,
``client_order_id`` (empty for a balance), ``what`` (one line: what differs) and ``applied``
(whether reconciliation changed the ledger for it). The kinds:

- ``order``: an order with the fleet's client order id prefix that is open on the exchange
  and not in the fleet's records (placed by a request whose answer was lost), or an open
  leg of a protection list that no open position holds. Left on the exchange.
- ``fill`` on the exchange, not in the ledger: an order with the fleet's prefix, unknown to
  the fleet's records, filled (seen among the fills since the last check). The fill is the
  fleet's by its client order id: it is **applied** to the ledger (once), and said so.
- ``fill`` in the ledger, not on the exchange: an open position counts a fill of an order the
  exchange has not (``status: missing``) or has filled less. Never changed: an operator
  decides.
- ``balance``: the ledger's positions in an asset are more than the account's balance of it
  (beyond ``DRIFT_TOLERANCE``); the account may hold more than the fleet bought (that is no
  drift). Paper positions are the paper wallet's, not the account's.

Nothing else is ever "fixed": an order of the fleet's that the records lack is reported on
every run while it is open; the ledger is changed only by fills that are the fleet's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from core.keys import KeySpace
from resilience.ledger import Position
from tasks.reconcile_index import Known

#: How much of a position the account's balance may lack before it is drift (rounding of
#: fees and lot steps: the ledger and the exchange round differently).
DRIFT_TOLERANCE = 0.001
#: Relative difference between two records of one order's fill that is still the same.
SAME_FILL = 1e-9


def item(
    kind: str, exchange: str, symbol: str, cid: str, what: str, **fields: Any
) -> dict[str, Any]:
    """Return one drift item (see the module docstring)."""
    base = {"kind": kind, "exchange": exchange, "symbol": symbol, "client_order_id": cid}
    return {**base, "what": what, "applied": False, **fields}


def unknown_order(exchange: str, order: Mapping[str, Any], applied: bool) -> dict[str, Any]:
    """Return the drift item of an open order of ours that the fleet's records lack."""
    filled = float(order.get("filled") or 0.0)
    what = "open on the exchange, not in the fleet's records"
    if applied:
        what += f"; its fill of {filled:g} applied to the ledger"
    return item(
        "order",
        exchange,
        str(order.get("symbol") or ""),
        str(order.get("clientOrderId") or ""),
        what,
        applied=applied,
        status=str(order.get("status") or "open"),
        side=order.get("side"),
        amount=order.get("amount"),
        price=order.get("price"),
        exchange_filled=filled,
    )


def orphan_leg(exchange: str, order: Mapping[str, Any], known: Known) -> dict[str, Any]:
    """Return the drift item of an open protective leg that no open position holds."""
    return item(
        "order",
        exchange,
        known.symbol,
        known.cid,
        f"a leg of protection list {known.list_cid} is open; no open position holds it",
        status=str(order.get("status") or "open"),
        side=order.get("side"),
        amount=order.get("amount"),
        price=order.get("price"),
        exchange_filled=float(order.get("filled") or 0.0),
    )


def unknown_fill(
    exchange: str, symbol: str, order: Mapping[str, Any], before: float, applied: bool
) -> dict[str, Any]:
    """Return the drift item of a filled order of ours the fleet's records and ledger lacked."""
    filled = float(order.get("filled") or 0.0)
    what = f"filled {filled:g} on the exchange, not in the ledger"
    what += ": applied (the order is the fleet's by its client order id)" if applied else ""
    return item(
        "fill",
        exchange,
        symbol,
        str(order.get("clientOrderId") or ""),
        what,
        applied=applied,
        status=str(order.get("status") or ""),
        side=order.get("side"),
        exchange_filled=filled,
        ledger_filled=before,
        price=order.get("average"),
    )


def ledger_fill(exchange: str, position: Position, record: Known, have: float) -> dict[str, Any]:
    """Return the drift item of a ledger fill the exchange does not show (or shows less of)."""
    filled = float(record.filled or 0.0)
    if record.status == "missing" or filled <= 0:
        what = f"in the ledger ({have:g} filled), not on the exchange ({record.status})"
    else:
        what = f"the ledger has {have:g} filled, the exchange {filled:g}"
    return item(
        "fill",
        exchange,
        position.symbol,
        record.cid,
        what,
        status=record.status,
        side=record.side,
        exchange_filled=filled,
        ledger_filled=have,
    )


def differs(have: float, filled: float | None) -> bool:
    """Return True when the ledger's ``have`` of an order is more than the exchange's."""
    return have - float(filled or 0.0) > have * SAME_FILL


def unconfirmed(record: Known | None, have: float) -> bool:
    """Return True when the index holds no exchange answer that covers the ledger's fill.

    A final record (the exchange's last word, ``missing`` included) is never asked again.
    """
    if record is None or record.filled is None:
        return True
    return not record.final and differs(have, record.filled)


def balances(
    exchange: str, positions: Iterable[Position], total: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Return the ``balance`` items: assets the ledger holds more of than the account."""
    held: dict[str, float] = {}
    symbols: dict[str, list[str]] = {}
    for position in positions:
        if position.mode != "paper" and position.amount > 0:
            asset = position.symbol.split("/")[0]
            held[asset] = held.get(asset, 0.0) + position.amount
            symbols.setdefault(asset, []).append(position.symbol)
    found = []
    for asset, amount in sorted(held.items()):
        balance = float(total.get(asset) or 0.0)
        if amount - balance > amount * DRIFT_TOLERANCE:
            what = f"the ledger holds {amount:g} {asset}, the account {balance:g}"
            symbol = ",".join(sorted(symbols[asset]))
            found.append(
                item(
                    "balance",
                    exchange,
                    symbol,
                    "",
                    what,
                    asset=asset,
                    ledger=amount,
                    balance=balance,
                    short=amount - balance,
                )
            )
    return found


async def ledger_applied(
    redis: Any, keys: KeySpace, exchange: str, cids: Iterable[str]
) -> dict[str, float]:
    """Return how much of each order's fill the ledger has applied (0 when none).

    Reads the ledger's per-order records (``core/keys.py`` ``ledger_fill``: the ``filled``
    the ledger has counted), one ``MGET`` in the ledger's hash tag.
    """
    wanted = sorted(set(cids))
    if not wanted:
        return {}
    raws = await redis.mget([keys.ledger_fill(exchange, c) for c in wanted])
    return {
        c: float(json.loads(r).get("filled", 0.0)) if r else 0.0
        for c, r in zip(wanted, raws, strict=True)
    }
