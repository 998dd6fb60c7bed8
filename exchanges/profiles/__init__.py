"""What the fleet must know about each exchange beyond ccxt: one module per exchange.

A profile (``exchanges/profiles/<ccxt id>.py``, a module-level ``PROFILE``) says which ccxt
options keep the instance on the spot REST API the fleet limits and the sandbox speaks, how
a client order id is written and looked up (idempotency and reconciliation), and which
responses mean the fleet is over a limit (the feedback that sets a fleet-wide cooldown).
The limit table itself is ``ratelimit/exchange_limits/<ccxt id>.py``; the sandbox dialect
``sandbox/dialects/<ccxt id>.py``; docs/EXCHANGES.md is the recipe for a new exchange.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ratelimit.manager import ExchangeRateLimitManager

log = logging.getLogger(__name__)

#: The exchanges the fleet supports, by ccxt id.
SUPPORTED = ("binance", "okx", "kraken", "coinbase", "htx")


@dataclass(frozen=True)
class Throttle:
    """A response saying the fleet is over a limit: cool down ``pool`` (None: all)."""

    status: int
    retry_after: float | None = None
    pool: str | None = None


def _throttled_by_status(status: int, headers: Mapping[str, str], body: str) -> Throttle | None:
    if status not in (418, 429):
        return None
    raw = headers.get("Retry-After") or headers.get("retry-after")
    try:
        retry_after = float(raw) if raw else None
    except ValueError:
        retry_after = None
    return Throttle(status, retry_after)


@dataclass(frozen=True)
class ExchangeProfile:
    """One exchange's profile; see the module docstring."""

    ccxt_id: str
    #: ccxt options (``fetchMarkets`` types and the like) for spot only.
    options: Mapping[str, Any] = field(default_factory=dict)
    #: The ``params`` key of ccxt's ``create_order`` that carries the client order id.
    client_order_param: str = "clientOrderId"
    #: What a client order id may look like on this exchange (ours must match it), and how
    #: long the fleet's own ids are.
    client_order_pattern: str = r"^[A-Za-z0-9_-]{1,32}$"
    client_order_length: int = 32
    #: ``fetch_order`` params that find an order by its client order id.
    lookup: Callable[[str], dict[str, Any]] = lambda cid: {"clientOrderId": cid}
    #: The ccxt methods that find an order by client order id, tried in order, each called
    #: with ``symbol`` and ``params=lookup(cid)`` (``fetch_order`` also with ``id=None``); a
    #: list answer is searched for the order whose ``clientOrderId`` is ``cid``.
    lookup_methods: tuple[str, ...] = ("fetch_order",)
    #: Reads a response (status, headers, body text) for "over the limit".
    throttled: Callable[[int, Mapping[str, str], str], Throttle | None] = _throttled_by_status
    #: The path (its end) of the response that publishes the exchange's limits, if any:
    #: only that response's body is parsed again for them (not every response's).
    limits_path: str | None = None
    #: Reads the limits the exchange publishes from that response (path, parsed JSON body):
    #: pool name -> limit, for the pools whose window matches the table's; {} otherwise.
    published_limits: Callable[[str, Any], dict[str, float]] = lambda path, body: {}
    #: The ccxt method that asks the exchange for that response, when nothing the fleet
    #: calls anyway reads it (OKX's account rate limit; Binance's comes with load_markets):
    #: asked once per fleet at start (:func:`ask_published_limits`).
    limits_method: str | None = None
    #: True when ccxt's ``create_order`` needs a price for a market buy (it spends
    #: ``amount * price`` of the quote currency: HTX); the gate passes the reference price.
    market_buy_price: bool = False
    #: Says an error's ccxt cause means "no such order" when ccxt does not raise
    #: ``OrderNotFound`` for it (the lookup then answers None, not an error).
    order_missing: Callable[[BaseException], bool] = lambda cause: False
    #: Returns (the path on the wire, signed?) of a ccxt request (path template, api), where
    #: ccxt's ``urls['api'][api]`` prefix is not the wire's (None: that prefix is).
    request_path: Callable[[str, Any], tuple[str, bool]] | None = None
    #: True when the exchange holds a position's exits itself: an OCO sell (a
    #: ``LIMIT_MAKER`` take-profit above, a ``STOP_LOSS_LIMIT`` below; Binance's
    #: ``POST /api/v3/orderList/oco``). Otherwise the fleet watch protects (resilience/exits.py).
    native_protection: bool = False
    #: Set when the fleet's side of this exchange is not built yet (refused at start).
    missing: str | None = None

    def new_client_order_id(self) -> str:
        """Return a fresh client order id in this exchange's format (prefix ``cai``)."""
        cid = f"cai{uuid.uuid4().hex}"[: self.client_order_length]
        if not re.match(self.client_order_pattern, cid):
            raise ValueError(f"{self.ccxt_id}: client order id {cid!r} does not fit its pattern")
        return cid


async def ask_published_limits(
    exchange: Any,
    limiter: ExchangeRateLimitManager,
    key: str,
    rules: ExchangeProfile,
    wait: float = 5.0,
) -> dict[str, float]:
    """Ask the exchange for the limits it publishes, once per fleet; return the limits in
    force afterwards (none without ``rules.limits_method``).

    ``exchange`` is the process's limited ccxt instance: its answer passes the limiter's
    feedback, which adopts what is lower than the configured limits and shares it. A process
    that does not win the fleet's claim waits (at most ``wait`` seconds) for what the fleet
    adopted, and asks itself if the claim is given back meanwhile.
    Warning: a failed question is logged and given back (this process does not ask again);
    the configured table stays in force.
    """
    if rules.limits_method is None:
        return {}
    # asked once per instance: the question is itself a request, which must not ask again
    exchange._crypto_ai_asked = True
    deadline = time.monotonic() + wait
    while True:
        if await limiter.aclaim_published(key):
            try:
                await getattr(exchange, rules.limits_method)()
            except Exception as exc:  # any failure: the configured table stays in force
                log.warning("%s: could not read its published limits: %s", key, exc)
                await limiter.arelease_published(key)
            break
        await limiter.arefresh_learned(key, force=True)
        if limiter.fleet_published(key) or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.05)
    await limiter.arefresh_learned(key, force=True)
    return {p.name: p.limit for p in limiter.table(key).pools}


def profile(ccxt_id: str) -> ExchangeProfile:
    """Return the profile of a supported exchange; raise ValueError for another."""
    if ccxt_id not in SUPPORTED:
        raise ValueError(f"unsupported exchange {ccxt_id!r}; supported: {', '.join(SUPPORTED)}")
    module = importlib.import_module(f"exchanges.profiles.{ccxt_id}")
    found: ExchangeProfile = module.PROFILE
    return found
