"""Kraken spot: ccxt options, client order ids, throttle answers.

Sources: ccxt 4.5.90 ``kraken.py``: ``create_order`` -> ``order_request`` sends
``params['clientOrderId']`` as ``cl_ord_id``; ``fetch_order`` (``QueryOrders``) needs the
order's ``txid`` and sends a client id as ``userref`` (an int32 on Kraken), so it cannot find
an order by ``cl_ord_id``; ``fetch_open_orders``/``fetch_closed_orders`` send
``params['clientOrderId']`` as the ``cl_ord_id`` filter of ``OpenOrders``/``ClosedOrders``.
Kraken: https://docs.kraken.com/api/docs/guides/spot-clordid (``cl_ord_id``: a long UUID,
a short UUID (32 hex), or free text of up to 18 characters; unique among open orders) and
https://docs.kraken.com/api/docs/guides/spot-rest-ratelimits (errors below).

Throttle answers are HTTP 200 bodies (Kraken sends no ``Retry-After``), so the cooldowns are
the time the limit needs to let the heaviest call through again at Kraken's decay rates
(Starter tier, ``ratelimit/exchange_limits/kraken.py``):

- ``EAPI:Rate limit exceeded``: the key's call counter is at its maximum; it decays at
  0.33/s, so a history call (weight 2) fits again after 2 / 0.33 = 6 s. Pool
  ``PRIVATE_COUNTER``.
- ``EOrder:Rate limit exceeded``: the order-rate counter is at its threshold; it decays at
  1/s and the heaviest charge (a cancel of a young order) is 8: 8 s. Pool ``ORDER_RATE``.
- ``EGeneral:Temporary lockout``: the key is locked out for "a few seconds, or longer" (no
  length given); 60 s, the sandbox's first lockout, for the whole exchange (every private
  call, orders included, is refused while it lasts).
- ``EGeneral:Too many requests``: the IP's public limit (about 1/s): 2 s for a burst of 2.
  Pool ``PUBLIC``.
- A 429 (from a proxy) with ``Retry-After``: as for every exchange.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from exchanges.profiles import ExchangeProfile, Throttle, _throttled_by_status

#: Kraken's throttle error strings -> (cooldown seconds, pool); see the module docstring.
THROTTLES: dict[str, tuple[float, str | None]] = {
    "EAPI:Rate limit exceeded": (2 / 0.33, "PRIVATE_COUNTER"),
    "EOrder:Rate limit exceeded": (8.0, "ORDER_RATE"),
    "EGeneral:Temporary lockout": (60.0, None),
    "EGeneral:Too many requests": (2.0, "PUBLIC"),
}


def _throttled(status: int, headers: Mapping[str, str], body: str) -> Throttle | None:
    answer = _throttled_by_status(status, headers, body)
    if answer is not None:
        return answer
    if "EAPI:" not in body and "EOrder:" not in body and "EGeneral:" not in body:
        return None
    for error, (seconds, pool) in THROTTLES.items():
        if error in body:
            return Throttle(status, seconds, pool)
    return None


def _request_path(path: str, api: Any) -> tuple[str, bool]:
    """ccxt's kraken signs ``/0/<api>/<path>`` (``kraken.sign``: version, then API name)."""
    name = api[0] if isinstance(api, list | tuple) else api
    return f"/0/{name}/{path}", name == "private"


PROFILE = ExchangeProfile(
    ccxt_id="kraken",
    # ccxt's kraken loads spot markets only (AssetPairs) and its currencies (Assets), both
    # served by the sandbox; no option selects futures or margin lists
    options={},
    client_order_pattern=(
        r"^(?:[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}"
        r"|[0-9a-fA-F]{32}|[\x21-\x7e]{1,18})$"
    ),
    # "cai" + hex is no UUID: Kraken's free text, at most 18 characters
    client_order_length=18,
    # the params of fetch_open_orders / fetch_closed_orders (see the module docstring: ccxt's
    # fetch_order cannot look up a cl_ord_id)
    lookup=lambda cid: {"clientOrderId": cid},
    lookup_methods=("fetch_open_orders", "fetch_closed_orders"),
    throttled=_throttled,
    request_path=_request_path,
)
