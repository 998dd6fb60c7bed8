"""Coinbase Advanced Trade: ccxt options, client order ids, lookup, throttle answers.

Sources: ccxt ``coinbase.py`` 4.5.90 (the installed one) and Coinbase's Advanced Trade docs.

* Options: ``fetchMarkets: fetchMarketsV3`` (``GET /api/v3/brokerage/market/products``, the
  transaction summary for fees, and a ``product_type=FUTURE`` list the sandbox answers empty),
  ``fetchTicker``/``fetchTickers`` V3 (market trades + best bid/ask; the products list),
  ``fetchBalance: v3PrivateGetBrokerageAccounts`` (ccxt's default: the v2 ``/v2/accounts``).
  A market buy spends ``market_market_ioc.quote_size``: ccxt computes it as amount * price,
  so the gate passes the reference price (``market_buy_price``). ccxt's ``load_markets``
  also always reads ``/v2/currencies``, ``/v2/currencies/crypto`` and ``/v2/exchange-rates``
  (``has['fetchCurrencies']`` is True and no option turns it off); the sandbox serves them.
* Client order ids: Create Order's ``client_order_id`` is any unique string (the docs: "A
  unique ID provided for the order"; a repeated one returns the existing order). ccxt 4.5.90
  does NOT map ``params['clientOrderId']``: it drops it and sends ``ccxt-<uuid>``; only
  ``params['client_order_id']`` reaches the exchange, hence ``client_order_param``.
* Lookup: ccxt's ``fetch_order`` calls ``GET /api/v3/brokerage/orders/historical/{order_id}``
  with ``order_id`` from the params (they extend the request), so the path needs a value; the
  documented (deprecated) ``client_order_id`` query parameter of Get Order names the order by
  client order id. The lookup sends the client order id in both (what Coinbase does with a
  path segment that is not an order id is not documented; the sandbox reads the query
  parameter). A missing order is answered
  ``{"error": "unknown", "error_details": "order with this orderID was not found"}``, which
  ccxt raises as ``ExchangeError`` (its ``broad`` entry reads "order with self orderID",
  a transpiler slip), not ``OrderNotFound``.
* Throttle: HTTP 429 (``{"message": "Rate limit exceeded"}`` on v3, ``rate_limit_exceeded`` on
  v2, an HTML page in some reports), no ``Retry-After`` documented: the fleet's default
  cooldown; the body does not say which limit (public per IP or private per key), so the
  whole exchange cools down. https://docs.cdp.coinbase.com/advanced-trade/docs/rest-api-rate-limits
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from exchanges.profiles import ExchangeProfile, Throttle, _throttled_by_status


def _request_path(path: str, api: Any) -> tuple[str, bool]:
    """ccxt's coinbase signs ``/api/v3/<path>`` for API ``['v3', ...]`` and ``/v2/<path>``
    otherwise; ``api[1]`` says whether the request is signed (ccxt ``coinbase.sign``)."""
    version = api[0] if isinstance(api, list | tuple) and api else "v2"
    signed = isinstance(api, list | tuple) and len(api) > 1 and api[1] == "private"
    prefix = "/api/v3" if version == "v3" else "/v2"
    return f"{prefix}/{path}", signed


def _order_missing(cause: BaseException) -> bool:
    """Coinbase's "order with this orderID was not found", which ccxt raises as ExchangeError."""
    return "order with this orderID was not found" in str(cause)


def _throttled(status: int, headers: Mapping[str, str], body: str) -> Throttle | None:
    """A 429, whatever its body (JSON or an HTML page): the whole exchange cools down."""
    if status != 429:
        return None
    return _throttled_by_status(status, headers, body)


PROFILE = ExchangeProfile(
    ccxt_id="coinbase",
    options={
        "fetchMarkets": "fetchMarketsV3",
        "fetchTicker": "fetchTickerV3",
        "fetchTickers": "fetchTickersV3",
        "fetchBalance": "v3PrivateGetBrokerageAccounts",
        "usePrivate": False,
    },
    client_order_param="client_order_id",
    # any string is accepted; the fleet's own are "cai" + 29 hex digits
    client_order_pattern=r"^[A-Za-z0-9_-]{1,64}$",
    client_order_length=32,
    lookup=lambda cid: {"order_id": cid, "client_order_id": cid},
    throttled=_throttled,
    order_missing=_order_missing,
    # a market buy spends ``quote_size``: ccxt computes it as amount * price
    market_buy_price=True,
    request_path=_request_path,
)
