"""OKX spot (v5 REST): ccxt options, client order ids, throttle answers.

Sources: ccxt ``okx.py`` (``create_order_request`` maps ``clientOrderId`` to ``clOrdId``;
``fetch_order`` and ``cancel_order`` take ``clOrdId`` instead of ``ordId``; ``fetch_markets``
reads ``options['fetchMarkets']['types']``; ``fetch_currencies`` calls the private
``/api/v5/asset/currencies`` unless ``options['sandboxMode']`` is set; ``create_order``
sends ``trade/batch-orders`` unless ``options['createOrder']`` names
``privatePostTradeOrder``; ``handle_errors`` maps ``50011`` to RateLimitExceeded).
OKX v5 docs (https://www.okx.com/docs-v5/en/#order-book-trading-trade-post-place-order):
``clOrdId`` is "a combination of case-sensitive alphanumerics, all numbers, or all letters
of up to 32 characters"; "Error Codes" / "Rate Limits": over a limit OKX answers HTTP 429
with code ``50011`` ("Too Many Requests") and no ``Retry-After``; ``50061`` is the
sub-account's order rate limit. Limits are per endpoint per 2 s, so a cooldown of one
window (2 s) is what the fleet waits when no ``Retry-After`` comes.
``GET /api/v5/trade/account-rate-limit`` (ccxt's implicit ``privateGetTradeAccountRateLimit``;
no unified method; ``okx.py`` line 372, ``'trade/account-rate-limit': {'cost': 1}``)
publishes the account's new-order budget per 2 s (``accRateLimit``, "Current sub-account
rate limit per 2 seconds"; ``nextAccRateLimit``, ``fillRatio`` and ``mainFillRatio`` are
``""`` below VIP 5; docs: "Get account rate limit"), read here so the fleet adopts it when
lower than its table's ``ACCOUNT_ORDERS``: one process of the fleet asks at start
(``limits_method``, ``exchanges.profiles.ask_published_limits``), the rest adopt its answer.
OKX publishes no per-endpoint limit and sends no usage headers: a 50011 to a request the
fleet admitted cuts the limit of that request's own pool (its scope's;
``ratelimit/learning.py``, AIMD), fleet-wide, so a table higher than the account's real
limits converges.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from exchanges.profiles import ExchangeProfile, Throttle

#: OKX counts every limit per 2 seconds; it names no wait, so the fleet waits one window.
WINDOW_SECONDS = 2.0


def _code(body: str) -> str | None:
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    if not isinstance(parsed, dict):
        return None
    codes = [str(parsed.get("code", ""))]
    data = parsed.get("data")
    if isinstance(data, list):
        codes += [str(d.get("sCode", "")) for d in data if isinstance(d, dict)]
    for code in ("50061", "50011"):
        if code in codes:
            return code
    return None


def _throttled(status: int, headers: Mapping[str, str], body: str) -> Throttle | None:
    code = _code(body) if body else None
    if status != 429 and code is None:
        return None
    raw = headers.get("Retry-After") or headers.get("retry-after")
    try:
        retry_after = float(raw) if raw else WINDOW_SECONDS
    except ValueError:
        retry_after = WINDOW_SECONDS
    if code == "50061":  # the account's new-order budget, not the endpoint's
        return Throttle(status, retry_after, "ACCOUNT_ORDERS")
    # the 429 does not say which endpoint's budget ran out: cool the whole exchange (the
    # fleet lowers the refused request's own pool: exchanges/limited.py _feedback)
    return Throttle(status, retry_after)


def _published(path: str, body: Any) -> dict[str, float]:
    """Read ``GET /api/v5/trade/account-rate-limit``'s ``accRateLimit`` (orders per 2 s)."""
    if not path.endswith("/trade/account-rate-limit") or not isinstance(body, dict):
        return {}
    if str(body.get("code")) != "0" or not isinstance(body.get("data"), list):
        return {}
    for row in body["data"]:
        try:
            limit = float(row["accRateLimit"])
        except (KeyError, TypeError, ValueError):
            continue
        if limit > 0:
            return {"ACCOUNT_ORDERS": limit}
    return {}


def _request_path(path: str, api: Any) -> tuple[str, bool]:
    """ccxt's okx signs ``/api/v5/<path>`` (``okx.sign``: ``'/api/' + self.version + '/'``);
    its APIs are named ``public`` and ``private``."""
    names = api if isinstance(api, list | tuple) else [api]
    return f"/api/v5/{path}", "private" in names


PROFILE = ExchangeProfile(
    ccxt_id="okx",
    options={
        "fetchMarkets": {"types": ["spot"]},
        # okx.fetch_currencies returns {} (no /asset/currencies call) in sandbox mode; the
        # option is read nowhere else (set_sandbox_mode, which adds the demo-trading
        # header, is not called)
        "sandboxMode": True,
        "defaultType": "spot",
        # POST /api/v5/trade/order (60 per 2 s), not trade/batch-orders
        "createOrder": "privatePostTradeOrder",
    },
    client_order_pattern=r"^[A-Za-z0-9]{1,32}$",
    client_order_length=32,
    lookup=lambda cid: {"clOrdId": cid},
    throttled=_throttled,
    limits_path="/trade/account-rate-limit",
    published_limits=_published,
    limits_method="privateGetTradeAccountRateLimit",
    request_path=_request_path,
)
