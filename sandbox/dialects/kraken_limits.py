"""Kraken's spot REST limits, enforced per API key (private) and per client IP (public).

Sources: https://docs.kraken.com/api/docs/guides/spot-rest-ratelimits (the REST call
counter) and https://docs.kraken.com/api/docs/guides/spot-ratelimits (the trading engine's
per-pair order-rate counter).

- The **call counter** of each API key starts at 0; every private call adds 1, the ledger and
  trade-history calls (``Ledgers``, ``QueryLedgers``, ``TradesHistory``, ``QueryTrades``)
  add 2, ``AddOrder``/``CancelOrder`` add nothing (they count in the order-rate counter). It
  decays continuously (Starter: at most 15, -0.33/s). A call that would take it over the
  maximum is refused with ``EAPI:Rate limit exceeded`` (and is not counted).
- A key that keeps calling while it is refused ("calls continue to be made while the rate
  limits are active": ``lockout_after`` refused calls in a row) is locked out: every call
  gets ``EGeneral:Temporary lockout`` for ``lockout_seconds``, doubling with each lockout up
  to ``max_lockout_seconds`` (Kraken's support pages speak of up to 15 minutes).
- The **order-rate counter** is per key and pair: ``AddOrder`` adds 1; ``CancelOrder`` adds
  a penalty by the order's age (8 under 5 s, 6 under 10 s, 5 under 15 s, 4 under 45 s, 2 under
  90 s, 1 under 300 s, 0 after); it decays at 1/s (Starter threshold 60). Over the threshold:
  ``EOrder:Rate limit exceeded``.
- **Public** endpoints: about 1 request per second per IP (a bucket of ``public_burst``
  refilled at ``public_rate``/s); over it: ``EGeneral:Too many requests``.

Every answer is HTTP 200 with the error string (Kraken sends no ``Retry-After``).
The knobs, by their names in ``SandboxLimits.overrides``: ``max_counter`` (15),
``counter_decay`` (0.33), ``lockout_after`` (5), ``lockout_seconds`` (60),
``max_lockout_seconds`` (900), ``order_threshold`` (60), ``order_decay`` (1.0),
``public_burst`` (5), ``public_rate`` (1.0), ``nonce_window`` (0, see ``kraken.py``).
``time_scale`` speeds every decay up and shortens lockouts by the same factor.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from core.config import SandboxLimits
from sandbox.errors import ApiError

DEFAULTS: dict[str, float] = {
    "max_counter": 15.0,
    "counter_decay": 0.33,
    "lockout_after": 5.0,
    "lockout_seconds": 60.0,
    "max_lockout_seconds": 900.0,
    "order_threshold": 60.0,
    "order_decay": 1.0,
    "public_burst": 5.0,
    "public_rate": 1.0,
    "nonce_window": 0.0,
}

#: Private calls that add 2 to the call counter (ledger / trade history).
HISTORY_CALLS = frozenset({"Ledgers", "QueryLedgers", "TradesHistory", "QueryTrades"})
#: Private calls that count in the order-rate counter instead of the call counter.
ORDER_CALLS = frozenset({"AddOrder", "CancelOrder"})
#: CancelOrder's penalty by the order's age in seconds: (age under, penalty).
CANCEL_PENALTIES = ((5.0, 8.0), (10.0, 6.0), (15.0, 5.0), (45.0, 4.0), (90.0, 2.0), (300.0, 1.0))

RATE_LIMIT = "EAPI:Rate limit exceeded"
ORDER_RATE_LIMIT = "EOrder:Rate limit exceeded"
LOCKOUT = "EGeneral:Temporary lockout"
TOO_MANY = "EGeneral:Too many requests"


def knobs(limits: SandboxLimits) -> dict[str, float]:
    """Return the Kraken limit knobs: the defaults with the config's overrides."""
    unknown = set(limits.overrides) - set(DEFAULTS)
    if unknown:
        raise ValueError(
            f"unknown kraken sandbox limit(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}"
        )
    return {**DEFAULTS, **limits.overrides}


@dataclass
class Meter:
    """A level that drains at a constant rate (Kraken's counters)."""

    level: float = 0.0
    at: float = 0.0

    def drained(self, rate: float, now: float) -> float:
        """Return the level at ``now``."""
        return max(0.0, self.level - max(0.0, now - self.at) * rate)

    def add(self, amount: float, rate: float, now: float) -> None:
        """Drain to ``now`` and add ``amount``."""
        self.level, self.at = self.drained(rate, now) + amount, now


@dataclass
class ClientStats:
    """What one API key (or, for public calls, one IP) did and was told."""

    requests: int = 0
    counter_total: float = 0.0
    sent_rate_limit: int = 0
    sent_order_rate_limit: int = 0
    sent_lockout: int = 0
    sent_too_many: int = 0
    lockouts: int = 0
    refused_in_row: int = 0
    lockout_until: float = 0.0
    counter: Meter = field(default_factory=Meter)
    public: Meter = field(default_factory=Meter)
    orders: dict[str, Meter] = field(default_factory=dict)

    @property
    def violations(self) -> int:
        """Return every limit answer this client got."""
        return (
            self.sent_rate_limit
            + self.sent_order_rate_limit
            + self.sent_lockout
            + self.sent_too_many
        )


class KrakenLimits:
    """Admit or refuse each request the way Kraken's REST gateway does."""

    def __init__(self, limits: SandboxLimits, clock: Callable[[], float] = time.time) -> None:
        self.knobs = knobs(limits)
        self.scale = limits.time_scale
        self.clock = clock
        self.keys: dict[str, ClientStats] = {}
        self.ips: dict[str, ClientStats] = {}

    def _rate(self, name: str) -> float:
        return self.knobs[name] / self.scale

    def key(self, api_key: str) -> ClientStats:
        """Return the counters of one API key."""
        return self.keys.setdefault(api_key, ClientStats())

    def ip(self, ip: str) -> ClientStats:
        """Return the public-call counters of one client IP."""
        return self.ips.setdefault(ip, ClientStats())

    def admit_public(self, ip: str) -> None:
        """Charge a public call to the IP's bucket or raise ``EGeneral:Too many requests``."""
        now, stats = self.clock(), self.ip(ip)
        stats.requests += 1
        if stats.lockout_until > now:
            stats.sent_too_many += 1
            raise ApiError(200, TOO_MANY, TOO_MANY)
        # the bucket as a meter: full means ``public_burst`` calls in a row
        level = stats.public.drained(self._rate("public_rate"), now)
        if level + 1 > self.knobs["public_burst"]:
            stats.sent_too_many += 1
            raise ApiError(200, TOO_MANY, TOO_MANY)
        stats.public.add(1.0, self._rate("public_rate"), now)

    def admit_private(self, api_key: str, call: str) -> None:
        """Charge a private call to the key's call counter or raise Kraken's answer."""
        now, stats = self.clock(), self.key(api_key)
        stats.requests += 1
        if stats.lockout_until > now:
            stats.sent_lockout += 1
            raise ApiError(200, LOCKOUT, LOCKOUT)
        if call in ORDER_CALLS:
            return
        cost = 2.0 if call in HISTORY_CALLS else 1.0
        rate = self._rate("counter_decay")
        if stats.counter.drained(rate, now) + cost > self.knobs["max_counter"]:
            stats.sent_rate_limit += 1
            stats.refused_in_row += 1
            if stats.refused_in_row >= self.knobs["lockout_after"]:
                self._lock_out(stats, now)
            raise ApiError(200, RATE_LIMIT, RATE_LIMIT)
        stats.refused_in_row = 0
        stats.counter.add(cost, rate, now)
        stats.counter_total += cost

    def _lock_out(self, stats: ClientStats, now: float) -> None:
        stats.refused_in_row = 0
        stats.lockouts += 1
        length = self.knobs["lockout_seconds"] * 2 ** (stats.lockouts - 1)
        length = min(length, self.knobs["max_lockout_seconds"]) * self.scale
        stats.lockout_until = now + length

    def admit_order(self, api_key: str, pair: str, penalty: float) -> None:
        """Charge ``penalty`` to the key's order-rate counter of ``pair`` or refuse it."""
        now, stats = self.clock(), self.key(api_key)
        meter = stats.orders.setdefault(pair, Meter())
        rate = self._rate("order_decay")
        if meter.drained(rate, now) + penalty > self.knobs["order_threshold"]:
            stats.sent_order_rate_limit += 1
            raise ApiError(200, ORDER_RATE_LIMIT, ORDER_RATE_LIMIT)
        meter.add(penalty, rate, now)

    @staticmethod
    def cancel_penalty(age: float) -> float:
        """Return CancelOrder's order-rate penalty for an order ``age`` seconds old."""
        for under, penalty in CANCEL_PENALTIES:
            if age < under:
                return penalty
        return 0.0

    def throttle(self, api_key: str | None, ip: str) -> ApiError:
        """Answer "over the limit" as if the client had used it all up (the http_429 fault).

        A key's call counter is set to its maximum (the next calls are refused until it
        decays: 1/``counter_decay`` s per call), and it gets ``EAPI:Rate limit exceeded``; a
        public call fills the IP's bucket and gets ``EGeneral:Too many requests``.
        """
        now = self.clock()
        if api_key:
            stats = self.key(api_key)
            stats.counter.level, stats.counter.at = self.knobs["max_counter"], now
            stats.sent_rate_limit += 1
            return ApiError(200, RATE_LIMIT, RATE_LIMIT)
        stats = self.ip(ip)
        stats.public.level, stats.public.at = self.knobs["public_burst"], now
        stats.sent_too_many += 1
        return ApiError(200, TOO_MANY, TOO_MANY)

    def counter_now(self, api_key: str) -> float:
        """Return the key's call counter now."""
        return self.key(api_key).counter.drained(self._rate("counter_decay"), self.clock())

    def violations(self) -> int:
        """Return every limit answer given."""
        return sum(s.violations for s in (*self.keys.values(), *self.ips.values()))

    def reset(self) -> None:
        """Forget every count and lockout."""
        self.keys.clear()
        self.ips.clear()
