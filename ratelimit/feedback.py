"""What the exchange says about our usage, fed back to the fleet's shared budget.

An exchange that reports its own count (Binance's ``X-MBX-USED-WEIGHT-1M``) raises the
shared count when it is above ours; one that reports what is left of the answered request's
own pool and when its interval ends (HTX's ``X-HB-RateLimit-Requests-Remain`` and
``-Expire``, :data:`INTERVAL_HEADERS`) raises the pool's count to what that implies (the
exchange's limit less what remains) and, from the first answer of an interval the fleet
alone spent in, teaches the limit the exchange counts against (remaining plus that one
request; adopted when lower than the configured one). A 429/418 starts a fleet-wide
cooldown for its ``Retry-After`` (or :data:`DEFAULT_COOLDOWN`). Every report has a
blocking form and an asyncio one (``areport_*``) for the request path, which never blocks
its event loop.

Warning: from interval headers alone, another client spending the same key at the start of
an interval looks like a lower limit: the fleet then prices the pool lower until an answer
shows more left than that (``remaining + 1`` is always a floor of the exchange's limit).

What an exchange that publishes no usage count teaches the fleet (AIMD on its throttle
answers) is ``ratelimit/learning.py``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Mapping
from contextvars import ContextVar
from typing import Any

from core.events import emit
from ratelimit.backend import Charge, Decision, LimiterBackend, Op
from ratelimit.learning import LimitLearning
from ratelimit.pools import PoolSpec, Priority
from ratelimit.tables import ExchangeTable

log = logging.getLogger(__name__)

#: Cooldown when a 429/418 carries no Retry-After (Binance always sends one).
DEFAULT_COOLDOWN = 60.0


#: A process reports an exchange's usage headers at most this often, unless a count is
#: near its pool's limit (then at once): each report is a round trip, and the fleet's own
#: count already follows every request it admits.
REPORT_EVERY = 0.25
URGENT_SHARE = 0.8

#: Headers that say how much is left of the answered request's own pool in the current
#: interval, and when that interval ends (epoch milliseconds): HTX's, on private answers.
INTERVAL_HEADERS = (("x-hb-ratelimit-requests-remain", "x-hb-ratelimit-requests-expire"),)

#: The wire path of the request whose answer is being reported, for the interval headers
#: (they speak of that request's pool) when the caller passes no scope: set by the
#: exchange's profile as the request is priced (``exchanges/profiles/htx.py``).
answered_path: ContextVar[str | None] = ContextVar("crypto_ai_answered_path", default=None)

#: One step of a report: a backend op, whose result the report is sent back.
Steps = Generator[Op[Any], Any, dict[str, float]]


def _interval(lowered: Mapping[str, str]) -> tuple[float, float] | None:
    """Return (requests left, epoch seconds the interval ends) from interval headers."""
    for remain_name, expire_name in INTERVAL_HEADERS:
        remain, expire = lowered.get(remain_name), lowered.get(expire_name)
        if remain is None or expire is None:
            continue
        try:
            left, ends = float(remain), float(expire)
        except ValueError:
            return None
        # epoch milliseconds (documented); a small figure is read as milliseconds from now
        return left, ends / 1000 if ends > 1e11 else time.time() + ends / 1000
    return None


def _span(pool: PoolSpec) -> float:
    return pool.window if pool.window > 0 else pool.limit / pool.rate


class UsageFeedback(LimitLearning):
    """The limiter's feedback half; ``ExchangeRateLimitManager`` provides the tables."""

    backend: LimiterBackend
    #: When this process last reported each exchange's usage headers (monotonic seconds).
    _reported: dict[str, float]
    #: The interval (its end, epoch seconds) each pool's interval headers last spoke of.
    _intervals: dict[tuple[str, str], float] | None = None

    def table(self, exchange: str) -> ExchangeTable:
        """Return the effective limits of a configured exchange."""
        raise NotImplementedError

    def _answered_pools(self, exchange: str, scope: str | None) -> dict[str, float]:
        """Return the pools (and weights) of the answered request's scope: the one passed,
        else the tabled endpoint whose path :data:`answered_path` holds; {} if unknown."""
        scopes = self.untaught(exchange).scopes
        if scope is None:
            path = answered_path.get()
            found = [s for s in scopes if path is not None and s.split(" ", 1)[-1] == path]
            scope = found[0] if len(found) == 1 else None
        return dict(scopes.get(scope, {})) if scope is not None else {}

    def _first_in(self, exchange: str, pool: str, ends: float) -> bool:
        """Return True the first time this process hears of ``pool``'s interval ``ends``."""
        if self._intervals is None:
            self._intervals = {}
        first = self._intervals.get((exchange, pool)) != ends
        self._intervals[(exchange, pool)] = ends
        return first

    def _count(self, exchange: str, pool: PoolSpec) -> Op[float | None]:
        """Return the op reading a pool's count now (None while a cooldown runs)."""
        op = self.backend.decision(Decision(exchange, (Charge(pool, 0.0),), Priority.HIGH, False))
        return op.then(
            lambda r: pool.limit - r.remaining[pool.name] if pool.name in r.remaining else None
        )

    def _interval_usage(
        self, exchange: str, lowered: Mapping[str, str], scope: str | None, first: set[str]
    ) -> Generator[Op[Any], Any, dict[str, float]]:
        """Read interval headers: what the exchange counted of the request's pools (the
        limit it counts against less what remains), and the limit a fleet-only interval
        implies (published fleet-wide when it differs from the one in force)."""
        reading = _interval(lowered)
        pools = self._answered_pools(exchange, scope) if reading is not None else {}
        if reading is None or not pools:
            return {}
        remain, ends = reading
        now, table = time.time(), self.table(exchange)
        usage: dict[str, float] = {}
        for name, weight in pools.items():
            pool = table.pool(name)
            if not now < ends <= now + _span(pool) * 1.05:
                continue  # an interval that is over, or not this pool's
            counted = self.published_limit(exchange, name)
            usage[name] = max(0.0, counted - remain)
            floor = remain + weight  # the exchange's limit: at least what is left and this one
            if floor > counted + 1e-9 and self._adopted(exchange, name):
                yield self.publishing(exchange, {name: floor})  # it was raised (or misread)
            if not self._first_in(exchange, name, ends):
                continue
            first.add(name)
            if remain > 0 and floor < counted - 1e-9:  # remain 0 may be a refusal: not counted
                # fewer left than the table allows: was this the fleet's first request here?
                fleet = yield self._count(exchange, pool)
                if fleet is not None and fleet <= weight + 1e-9:
                    yield self.publishing(exchange, {name: floor})
        return usage

    def _adopted(self, exchange: str, pool: str) -> bool:
        """Return True when ``pool`` is priced below its configured limit (published)."""
        configured = (self._configured or {}).get(exchange)
        current = self.untaught(exchange).pool(pool).limit
        return configured is not None and current < configured.pool(pool).limit - 1e-9

    def _reporting(self, exchange: str, headers: Mapping[str, str], scope: str | None) -> Steps:
        table = self.table(exchange)
        lowered = {k.lower(): v for k, v in headers.items()}
        usage: dict[str, float] = {}
        for header, pool in table.usage_headers.items():
            raw = lowered.get(header)
            if raw is None:
                continue
            try:
                usage[pool] = float(raw)
            except ValueError:
                log.warning("%s: ignoring malformed %s header %r", exchange, header, raw)
        first: set[str] = set()
        usage.update((yield from self._interval_usage(exchange, lowered, scope, first)))
        table = self.table(exchange)  # what the interval headers taught is priced in
        observed = [(table.pool(p), used) for p, used in usage.items()]
        now = time.monotonic()
        urgent = bool(first) or any(used >= URGENT_SHARE * p.limit for p, used in observed)
        recent = now - self._reported.get(exchange, -REPORT_EVERY) < REPORT_EVERY
        if not usage or (recent and not urgent):  # nothing worth a round trip now
            return usage
        self._reported[exchange] = now
        yield self.backend.observation(exchange, observed)
        return usage

    def _run_steps(self, steps: Steps) -> dict[str, float]:
        try:
            op = next(steps)
            while True:
                op = steps.send(self.backend.run(op))
        except StopIteration as done:
            result: dict[str, float] = done.value
            return result

    async def _arun_steps(self, steps: Steps) -> dict[str, float]:
        try:
            op = next(steps)
            while True:
                op = steps.send(await self.backend.arun(op))
        except StopIteration as done:
            result: dict[str, float] = done.value
            return result

    def report_headers(
        self, exchange: str, headers: Mapping[str, str], scope: str | None = None
    ) -> dict[str, float]:
        """Adopt the exchange's own usage counts from response headers; return what was read.

        Binance sends ``X-MBX-USED-WEIGHT-1M`` and ``X-MBX-ORDER-COUNT-10S``/``-1D``; HTX
        what is left of the pool of the answered request (``scope``, else the path in
        :data:`answered_path`). A count above ours raises the shared count; a lower one
        changes nothing.
        """
        return self._run_steps(self._reporting(exchange, headers, scope))

    async def areport_headers(
        self, exchange: str, headers: Mapping[str, str], scope: str | None = None
    ) -> dict[str, float]:
        """:meth:`report_headers` for async code."""
        return await self._arun_steps(self._reporting(exchange, headers, scope))

    def _cooling(
        self, exchange: str, status: int, retry_after: float | None, pool: str | None
    ) -> Op[float]:
        if pool is not None:
            self.table(exchange).pool(pool)
        seconds = retry_after if retry_after and retry_after > 0 else DEFAULT_COOLDOWN

        def throttled(left: float) -> float:
            emit("exchange.throttled", exchange=exchange, status=status, seconds=left)
            log.warning(
                "%s answered %s: no process of the fleet calls %s for %.1fs",
                exchange,
                status,
                pool or "it",
                left,
            )
            return left

        return self.backend.cooling(exchange, seconds, pool, f"http {status}").then(throttled)

    def report_throttle(
        self, exchange: str, status: int, retry_after: float | None = None, pool: str | None = None
    ) -> float:
        """Start a fleet-wide cooldown after a 429/418; return its length in seconds.

        ``pool`` limits the cooldown to one pool (e.g. Binance's ORDERS_10S after -1015);
        None stops every request to the exchange, which is what an IP-wide 429/418 needs.
        """
        return self.backend.run(self._cooling(exchange, status, retry_after, pool))

    async def areport_throttle(
        self, exchange: str, status: int, retry_after: float | None = None, pool: str | None = None
    ) -> float:
        """:meth:`report_throttle` for async code."""
        return await self.backend.arun(self._cooling(exchange, status, retry_after, pool))
