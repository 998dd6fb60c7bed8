"""HTX (Huobi) spot: ccxt options, client order ids, throttle answers.

Sources: ccxt ``htx.py`` (4.5.x): ``fetch_markets`` fetches the ``types`` set in
``options['fetchMarkets']`` (spot, linear and inverse by default: the last two are the
contract API on ``api.hbdm.vn``, so both are switched off); ``create_order`` sends
``clientOrderId`` as ``client-order-id`` ("must be 64 chars max and unique within 24 hours");
``fetch_order`` with ``params={"clientOrderId": cid}`` calls
``GET /v1/order/orders/getClientOrder``; ``handle_errors`` maps
``base-request-exceed-frequency-limit``, ``rate-too-many-requests`` and the err-msg
``request limit`` to RateLimitExceeded. HTX spot API docs
(https://huobiapi.github.io/docs/spot/v1/en/, "Access and rate limits"): private answers carry
``X-HB-RateLimit-Requests-Remain`` (left in the interval) and
``X-HB-RateLimit-Requests-Expire`` (when the interval ends, epoch milliseconds); market data
over the per-IP limit is answered HTTP 429.

Those headers speak of the answered request's own endpoint, so the profile names the
request's wire path to the limiter's feedback as it is priced (``_request_path``:
``ratelimit.feedback.answered_path``); the feedback raises that pool's fleet-wide count to
what the exchange counted and learns the limit a fleet-only interval implies
(``ratelimit/feedback.py``). A ``Remain`` of 0 on an answer that is not an error is the
pool used up, not an overrun: its count is then full until the interval ends, and nothing
else cools down.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from exchanges.profiles import ExchangeProfile, Throttle, _throttled_by_status
from ratelimit.feedback import answered_path

#: err-codes / err-msgs of HTX's "over the limit" answers (ccxt htx ``exceptions``).
LIMIT_ANSWERS = (
    '"base-request-exceed-frequency-limit"',
    '"rate-too-many-requests"',
    '"request limit"',
    '"api-limit-exceeded"',
    '"too-many-request"',
)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lowered), None)


def _until_expire(headers: Mapping[str, str]) -> float | None:
    """Return the seconds until the interval in ``X-HB-RateLimit-Requests-Expire`` ends."""
    raw = _header(headers, "X-HB-RateLimit-Requests-Expire")
    try:
        value = float(raw) if raw else None
    except ValueError:
        return None
    if value is None:
        return None
    # an epoch in milliseconds (what HTX documents), or a duration in milliseconds
    left = value / 1000 - time.time() if value > 1e11 else value / 1000
    return left if left > 0 else None


def _throttled(status: int, headers: Mapping[str, str], body: str) -> Throttle | None:
    """HTX's "over the limit": a 429, or a limit err-code in the body."""
    limited_body = any(code in body for code in LIMIT_ANSWERS) and '"error"' in body
    if status != 429 and not limited_body:
        return None
    wait = _until_expire(headers)
    if wait is None:
        answer = _throttled_by_status(429, headers, body)
        wait = answer.retry_after if answer is not None else None
    pool = "PUBLIC" if status == 429 and '"request limit"' in body else None
    return Throttle(status if status == 429 else 429, wait, pool)


def _request_path(path: str, api: Any) -> tuple[str, bool]:
    """Return ccxt htx's wire path (its ``urls['api']`` are bare hosts) and whether it is
    signed; note the path for the feedback on its answer (its interval headers)."""
    names = api if isinstance(api, list | tuple) else [api]  # ['spot', 'private']
    wire = f"/{path}"
    answered_path.set(wire)
    return wire, any("private" in str(a).lower() for a in names)


PROFILE = ExchangeProfile(
    ccxt_id="htx",
    options={
        "fetchMarkets": {"types": {"spot": True, "linear": False, "inverse": False}},
        "defaultType": "spot",
    },
    # HTX: client-order-id up to 64 characters; the fleet's are "cai" + 32 hex digits
    client_order_pattern=r"^[A-Za-z0-9_-]{1,64}$",
    client_order_length=35,
    lookup=lambda cid: {"clientOrderId": cid},
    throttled=_throttled,
    request_path=_request_path,
    # ccxt htx: a market buy's amount is the quote to spend unless it gets a price
    # (createMarketBuyOrderRequiresPrice, True by default): it then spends amount * price
    market_buy_price=True,
)
