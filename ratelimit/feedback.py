"""What the exchange says about our usage, fed back to the fleet's shared budget.

An exchange that reports its own count (Binance's ``X-MBX-USED-WEIGHT-1M``) raises the
shared count when it is above ours; a 429/418 starts a fleet-wide cooldown for its
``Retry-After`` (or :data:`DEFAULT_COOLDOWN`). Every report has a blocking form and an
asyncio one (``areport_*``) for the request path, which never blocks its event loop.

What an exchange that publishes no usage count teaches the fleet (AIMD on its throttle
answers) is ``ratelimit/learning.py``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from core.events import emit
from ratelimit.backend import LimiterBackend, Op
from ratelimit.learning import LimitLearning
from ratelimit.tables import ExchangeTable

log = logging.getLogger(__name__)

#: Cooldown when a 429/418 carries no Retry-After (Binance always sends one).
DEFAULT_COOLDOWN = 60.0


#: A process reports an exchange's usage headers at most this often, unless a count is
#: near its pool's limit (then at once): each report is a round trip, and the fleet's own
#: count already follows every request it admits.
REPORT_EVERY = 0.25
URGENT_SHARE = 0.8


class UsageFeedback(LimitLearning):
    """The limiter's feedback half; ``ExchangeRateLimitManager`` provides the tables."""

    backend: LimiterBackend
    #: When this process last reported each exchange's usage headers (monotonic seconds).
    _reported: dict[str, float]

    def table(self, exchange: str) -> ExchangeTable:
        """Return the effective limits of a configured exchange."""
        raise NotImplementedError

    def _observation(self, exchange: str, headers: Mapping[str, str]) -> Op[dict[str, float]]:
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
        observed = [(table.pool(p), used) for p, used in usage.items()]
        now = time.monotonic()
        urgent = any(used >= URGENT_SHARE * pool.limit for pool, used in observed)
        recent = now - self._reported.get(exchange, -REPORT_EVERY) < REPORT_EVERY
        if not usage or (recent and not urgent):  # nothing worth a round trip now
            return Op(lambda _: usage, local=lambda: None)
        self._reported[exchange] = now
        return self.backend.observation(exchange, observed).then(lambda _: usage)

    def report_headers(self, exchange: str, headers: Mapping[str, str]) -> dict[str, float]:
        """Adopt the exchange's own usage counts from response headers; return what was read.

        Binance sends ``X-MBX-USED-WEIGHT-1M`` and ``X-MBX-ORDER-COUNT-10S``/``-1D``. A count
        above ours raises the shared count; a lower one changes nothing.
        """
        return self.backend.run(self._observation(exchange, headers))

    async def areport_headers(self, exchange: str, headers: Mapping[str, str]) -> dict[str, float]:
        """:meth:`report_headers` for async code."""
        return await self.backend.arun(self._observation(exchange, headers))

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
