"""Binance spot: ccxt options, client order ids, throttle answers.

Sources: ccxt ``binance.py`` (``create_order`` maps ``clientOrderId`` to
``newClientOrderId``; ``fetch_order`` takes ``origClientOrderId``); Binance spot API docs:
``newClientOrderId`` matches ``^[\\.A-Z\\:/a-z0-9_-]{1,36}$``; 429 (``-1003`` weight,
``-1015`` order rate) and 418 (IP ban) carry ``Retry-After``; ``GET /api/v3/exchangeInfo``
publishes the account's ``rateLimits`` (type, interval, intervalNum, limit), read here so the
fleet adopts a limit lower than its table's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from exchanges.profiles import ExchangeProfile, Throttle, _throttled_by_status


def _throttled(status: int, headers: Mapping[str, str], body: str) -> Throttle | None:
    answer = _throttled_by_status(status, headers, body)
    if answer is not None and "-1015" in body:  # the order rate, not the IP's weight
        return Throttle(answer.status, answer.retry_after, "ORDERS_10S")
    return answer


#: exchangeInfo ``rateLimits`` (type, interval, intervalNum) -> the table's pool.
_POOLS = {
    ("REQUEST_WEIGHT", "MINUTE", 1): "REQUEST_WEIGHT",
    ("RAW_REQUESTS", "MINUTE", 5): "RAW_REQUESTS",
    ("ORDERS", "SECOND", 10): "ORDERS_10S",
    ("ORDERS", "DAY", 1): "ORDERS_1D",
}


def _published(path: str, body: Any) -> dict[str, float]:
    """Read ``GET /api/v3/exchangeInfo``'s ``rateLimits`` (what ccxt's load_markets reads)."""
    if not path.endswith("/exchangeInfo") or not isinstance(body, dict):
        return {}
    found: dict[str, float] = {}
    for rule in body.get("rateLimits") or []:
        try:
            key = (rule["rateLimitType"], rule["interval"], int(rule["intervalNum"]))
            limit = float(rule["limit"])
        except (KeyError, TypeError, ValueError):
            continue
        if key in _POOLS and limit > 0:
            found[_POOLS[key]] = limit
    return found


PROFILE = ExchangeProfile(
    ccxt_id="binance",
    options={
        "fetchMarkets": {"types": ["spot"]},
        "fetchCurrencies": False,
        "fetchMargins": False,
    },
    client_order_pattern=r"^[\.A-Z\:/a-z0-9_-]{1,36}$",
    lookup=lambda cid: {"origClientOrderId": cid},
    throttled=_throttled,
    limits_path="/exchangeInfo",
    published_limits=_published,
    native_protection=True,
)
