"""What an endpoint string names, read once: a ccxt method or a REST path, and its class.

An endpoint is either a ccxt unified method (``"fetch_ticker"``) or a REST path
(``"/api/v3/ticker/price"``, ``"GET /api/v3/ticker/price"``, ``"DELETE /api/v3/order"``).
:meth:`Endpoint.parse` reads it once at the edge; every later step asks the parsed value.

The class decides which fleet-wide breaker a call reports to: ``orders`` (anything that can
move money), ``private`` (account reads) or ``public`` (market data).

:func:`check_result` says whether an answer has what the call must return: ccxt hands
malformed JSON to its parsers as text and returns empty fields, which is not data.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from core.errors import MalformedResponseError

WRITES = frozenset({"create_order", "cancel_order", "edit_order", "cancel_all_orders"})
CANCELS = frozenset({"cancel_order", "cancel_all_orders"})
#: Unified methods and REST paths that read the account (signed, per-key limits).
PRIVATE = frozenset(
    {
        "fetch_balance",
        "fetch_order",
        "fetch_orders",
        "fetch_open_orders",
        "fetch_closed_orders",
        "fetch_my_trades",
        "/api/v3/account",
        "/api/v3/order",
        "/api/v3/openOrders",
        "/api/v3/allOrders",
        "/api/v3/myTrades",
        "/api/v3/orderList",
        "/api/v3/openOrderList",
        "/api/v3/allOrderList",
    }
)
HTTP_METHODS = ("GET", "POST", "DELETE", "PUT")


@dataclass(frozen=True)
class Endpoint:
    """A parsed endpoint: ``method`` for a ccxt unified call, else ``http`` and ``path``."""

    text: str
    method: str | None
    http: str | None
    path: str | None
    write: bool
    cancel: bool
    klass: str

    @property
    def rest(self) -> bool:
        """Return True for a raw REST path."""
        return self.path is not None

    @staticmethod
    @functools.lru_cache(maxsize=512)
    def parse(text: str) -> Endpoint:
        """Return the endpoint ``text`` names (cached: the same few strings repeat)."""
        verb, _, rest = text.partition(" ")
        if rest and verb.upper() in HTTP_METHODS:
            http, path = verb.upper(), rest
        elif text.startswith("/"):
            http, path = "GET", text
        else:
            unified = text
            write = unified in WRITES
            klass = "orders" if write else "private" if unified in PRIVATE else "public"
            return Endpoint(text, unified, None, None, write, unified in CANCELS, klass)
        write = http in ("POST", "DELETE", "PUT")
        klass = "orders" if write else "private" if path in PRIVATE else "public"
        return Endpoint(text, None, http, path, write, http == "DELETE", klass)


def check_result(method: str, result: Any) -> Any:
    """Return ``result`` if it has what ``method`` must return; else raise Malformed."""
    problem = None
    if isinstance(result, str | bytes):
        problem = "the answer is not JSON"
    elif method == "fetch_ticker" and (not isinstance(result, dict) or result.get("last") is None):
        problem = "a ticker without a last price"
    elif method in ("fetch_tickers", "load_markets") and not isinstance(result, dict):
        problem = "no mapping of symbols"
    elif method == "fetch_ohlcv" and not all(
        isinstance(row, list) and len(row) >= 6 and None not in row[:5] for row in result or []
    ):
        problem = "candles without prices"
    elif method == "fetch_order_book" and not (
        isinstance(result, dict) and isinstance(result.get("bids"), list)
    ):
        problem = "an order book without bids"
    elif method in ("create_order", "fetch_order") and not (
        isinstance(result, dict) and result.get("id")
    ):
        problem = "an order without an id"
    if problem:
        raise MalformedResponseError(f"{method}: {problem}")
    return result
