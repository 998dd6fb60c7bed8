"""coinbase's published limits for a default account, as the fleet's limit table.

Sources (read 2026-12):

* Coinbase Advanced Trade: https://docs.cdp.coinbase.com/advanced-trade/docs/rest-api-rate-limits
  public endpoints 10 requests per second per IP, private endpoints 30 requests per second
  per user (API key); over it HTTP 429. Buckets here (one second's requests of burst).
* Coinbase App (v2) API, which ccxt's ``load_markets`` reads (currencies, exchange rates):
  https://docs.cdp.coinbase.com/coinbase-app/api-architecture/rate-limiting 10,000 requests
  per hour: ``V2_HOURLY``, a sliding hour.

Scopes are the wire paths (``GET /api/v3/brokerage/...``, ``GET /v2/...``): ccxt's coinbase
has one ``urls['api']['rest']`` and APIs named ``['v3', 'private']``, so its profile
(``exchanges/profiles/coinbase.py`` ``request_path``) tells the limiter's hook the wire path
and whether the request is signed. Path parameters stay as ccxt's templates
(``{product_id}``).
"""

from __future__ import annotations

from ratelimit.table_model import ExchangeTable, bucket, sliding

_PUB, _PRIV, _V2 = "PUBLIC", "PRIVATE", "V2_HOURLY"

#: (method, ccxt API version, ccxt path template, pool)
_ENDPOINTS: tuple[tuple[str, str, str, str], ...] = (
    ("GET", "v3", "brokerage/time", _PUB),
    ("GET", "v3", "brokerage/market/products", _PUB),
    ("GET", "v3", "brokerage/market/products/{product_id}", _PUB),
    ("GET", "v3", "brokerage/market/products/{product_id}/ticker", _PUB),
    ("GET", "v3", "brokerage/market/products/{product_id}/candles", _PUB),
    ("GET", "v3", "brokerage/market/product_book", _PUB),
    ("GET", "v3", "brokerage/best_bid_ask", _PRIV),
    ("GET", "v3", "brokerage/product_book", _PRIV),
    ("GET", "v3", "brokerage/products", _PRIV),
    ("GET", "v3", "brokerage/products/{product_id}", _PRIV),
    ("GET", "v3", "brokerage/products/{product_id}/ticker", _PRIV),
    ("GET", "v3", "brokerage/products/{product_id}/candles", _PRIV),
    ("GET", "v3", "brokerage/accounts", _PRIV),
    ("GET", "v3", "brokerage/transaction_summary", _PRIV),
    ("GET", "v3", "brokerage/orders/historical/batch", _PRIV),
    ("GET", "v3", "brokerage/orders/historical/fills", _PRIV),
    ("GET", "v3", "brokerage/orders/historical/{order_id}", _PRIV),
    ("POST", "v3", "brokerage/orders", _PRIV),
    ("POST", "v3", "brokerage/orders/batch_cancel", _PRIV),
    ("GET", "v2", "currencies", _V2),
    ("GET", "v2", "currencies/crypto", _V2),
    ("GET", "v2", "exchange-rates", _V2),
    ("GET", "v2", "time", _V2),
)
_WIRE_PREFIX = {"v3": "/api/v3", "v2": "/v2"}
_ORDER_PATHS = ("brokerage/orders", "brokerage/orders/batch_cancel")


def _names(method: str, version: str, path: str) -> tuple[str]:
    """Return the scope of a request: its wire path."""
    return (f"{method} {_WIRE_PREFIX[version]}/{path}",)


COINBASE = ExchangeTable(
    pools=(bucket(_PUB, 10, 10), bucket(_PRIV, 30, 30), sliding(_V2, 10000, 3600)),
    scopes={
        "public": {_PUB: 1},
        "private": {_PRIV: 1},
        "order": {_PRIV: 1},
        "cancel": {_PRIV: 1},
        **{
            name: {pool: 1}
            for method, version, path, pool in _ENDPOINTS
            for name in _names(method, version, path)
        },
    },
    order_scopes=frozenset(
        {
            "order",
            "cancel",
            *(name for path in _ORDER_PATHS for name in _names("POST", "v3", path)),
        }
    ),
)

TABLE = COINBASE
