"""Binance spot: ccxt options, client order ids, throttle answers.

Sources: ccxt ``binance.py`` (``create_order`` maps ``clientOrderId`` to
``newClientOrderId``; ``fetch_order`` takes ``origClientOrderId``); Binance spot API docs:
``newClientOrderId`` matches ``^[\\.A-Z\\:/a-z0-9_-]{1,36}$``; 429 (``-1003`` weight,
``-1015`` order rate) and 418 (IP ban) carry ``Retry-After``.
"""

from __future__ import annotations

from collections.abc import Mapping

from exchanges.profiles import ExchangeProfile, Throttle, _throttled_by_status


def _throttled(status: int, headers: Mapping[str, str], body: str) -> Throttle | None:
    answer = _throttled_by_status(status, headers, body)
    if answer is not None and "-1015" in body:  # the order rate, not the IP's weight
        return Throttle(answer.status, answer.retry_after, "ORDERS_10S")
    return answer


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
)
