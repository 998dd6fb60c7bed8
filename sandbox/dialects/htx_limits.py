"""HTX's request limits: per IP for market data, per UID and endpoint for private calls.

HTX counts in fixed intervals: public market data per client IP (``public_per_1s``, 800
requests per second across the market endpoints), private endpoints per UID (here: per API
key, the sandbox has one key per UID) and per endpoint, in 2-second intervals (the June 2020
notice: ``place``/``cancel``/``accounts``/``balance`` 100 per 2 s, ``openOrders`` 50 per
2 s; the order and match-result queries are not in the rows we could read and are taken as
50 per 2 s). Private answers carry ``X-HB-RateLimit-Requests-Remain`` (requests left in the
interval) and ``X-HB-RateLimit-Requests-Expire`` (epoch milliseconds when the interval ends).

Over a limit: market data gets HTTP 429 with ``{"status": "error", "err-code":
"invalid-parameter", "err-msg": "request limit"}``; a private endpoint HTTP 200 with
``err-code`` ``base-request-exceed-frequency-limit`` (both are the bodies ccxt's htx
``exceptions`` map to RateLimitExceeded). A client that keeps sending while refused
(``ban_after`` refusals within one interval) is locked out for ``ban_seconds`` (doubling each
time, at most ``max_ban_seconds``, all times ``time_scale``) and every request of that scope
is refused until then. Knobs: ``SandboxLimits.overrides`` by the names in :data:`KNOBS`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from core.config import SandboxLimits
from sandbox.errors import ApiError

#: The limit knobs (``SandboxLimits.overrides`` names) and HTX's published values.
KNOBS: dict[str, float] = {
    "public_per_1s": 800,
    "place_per_2s": 100,
    "cancel_per_2s": 100,
    "accounts_per_2s": 100,
    "balance_per_2s": 100,
    "open_orders_per_2s": 50,
    "order_query_per_2s": 50,
    "matchresults_per_2s": 50,
}

PUBLIC_WINDOW, PRIVATE_WINDOW = 1.0, 2.0
PUBLIC_LIMITED = ("invalid-parameter", "request limit")
PRIVATE_LIMITED = (
    "base-request-exceed-frequency-limit",
    "Frequency of requests has exceeded the limit, please try again later",
)
REMAIN, EXPIRE = "X-HB-RateLimit-Requests-Remain", "X-HB-RateLimit-Requests-Expire"


@dataclass
class Scope:
    """One counted scope: an IP's market data, or one UID's endpoint."""

    window: int = -1
    used: int = 0
    refused_in_window: int = 0
    locked_until: float = 0.0
    lockouts: int = 0


@dataclass
class ClientStats:
    """What one client (an IP, or an API key for private calls) did and was told."""

    requests: int = 0
    limited: int = 0
    locked_out: int = 0
    lockouts: int = 0
    inside_wait: int = 0
    told_to_wait_until: float = 0.0
    used_by_window: dict[str, int] = field(default_factory=dict)
    #: when the last limit answers were given (epoch seconds) and for which group
    limited_at: list[tuple[float, str]] = field(default_factory=list)

    def refused(self, now: float, group: str) -> None:
        """Count one limit answer."""
        self.limited += 1
        self.limited_at = [*self.limited_at[-49:], (round(now, 4), group)]


class HtxLimits:
    """Admit or refuse each request the way HTX's gateway does (see the module docstring)."""

    def __init__(self, limits: SandboxLimits, clock: Callable[[], float] = time.time) -> None:
        self.limits = limits
        self.clock = clock
        unknown = set(limits.overrides) - set(KNOBS)
        if unknown:
            raise ValueError(f"htx sandbox: unknown limit overrides {sorted(unknown)}")
        self.values = {k: float(limits.overrides.get(k, v)) for k, v in KNOBS.items()}
        self.scopes: dict[tuple[str, str], Scope] = {}
        self.clients: dict[str, ClientStats] = {}

    def client(self, who: str) -> ClientStats:
        """Return the counters of one client."""
        return self.clients.setdefault(who, ClientStats())

    def window_of(self, group: str) -> float:
        """Return the interval length of a group, in (scaled) seconds."""
        base = PUBLIC_WINDOW if group == "public" else PRIVATE_WINDOW
        return base * self.limits.time_scale

    def limit_of(self, group: str) -> float:
        """Return the requests allowed per interval in a group."""
        suffix = "_per_1s" if group == "public" else "_per_2s"
        return self.values[group + suffix]

    def admit(self, ip: str, account: str | None, group: str) -> dict[str, str]:
        """Count one request of ``group`` (``public`` per IP, else per account) or refuse it.

        Returns the rate-limit headers HTX puts on private answers (none on market data).
        """
        now = self.clock()
        who = ip if group == "public" or not account else account
        stats = self.client(who)
        stats.requests += 1
        if stats.told_to_wait_until > now:
            stats.inside_wait += 1
        scope = self.scopes.setdefault((who, group), Scope())
        length = self.window_of(group)
        window = int(now // length)
        if window != scope.window:
            scope.window, scope.used, scope.refused_in_window = window, 0, 0
        ends = (window + 1) * length
        if scope.locked_until > now:
            stats.locked_out += 1
            stats.refused(now, group)
            raise self._refusal(group, 0, scope.locked_until)
        limit = self.limit_of(group)
        if scope.used + 1 > limit:
            stats.refused(now, group)
            stats.told_to_wait_until = max(stats.told_to_wait_until, ends)
            scope.refused_in_window += 1
            if scope.refused_in_window >= self.limits.ban_after:
                scope.lockouts += 1
                stats.lockouts += 1
                span = self.limits.ban_seconds * 2 ** (scope.lockouts - 1)
                span = min(span, self.limits.max_ban_seconds) * self.limits.time_scale
                scope.locked_until = now + span
                stats.told_to_wait_until = max(stats.told_to_wait_until, scope.locked_until)
                raise self._refusal(group, 0, scope.locked_until)
            raise self._refusal(group, 0, ends)
        scope.used += 1
        key = f"{group}:{window}"
        stats.used_by_window[key] = scope.used
        if len(stats.used_by_window) > 2000:
            del stats.used_by_window[next(iter(stats.used_by_window))]
        if group == "public":
            return {}
        return self._headers(int(limit - scope.used), ends)

    def headers(self, ip: str, account: str | None, group: str) -> dict[str, str]:
        """Return the current rate-limit headers of a private group (for error answers)."""
        if group == "public":
            return {}
        who = account or ip
        now = self.clock()
        length = self.window_of(group)
        window = int(now // length)
        scope = self.scopes.get((who, group), Scope())
        used = scope.used if scope.window == window else 0
        until = max((window + 1) * length, scope.locked_until)
        left = 0 if scope.locked_until > now else int(self.limit_of(group) - used)
        return self._headers(max(0, left), until)

    def throttle(self, ip: str, seconds: float) -> ApiError:
        """Tell a client to wait ``seconds`` (a 429 as for market data over the limit)."""
        stats = self.client(ip)
        now = self.clock()
        stats.refused(now, "public")
        until = now + seconds
        stats.told_to_wait_until = max(stats.told_to_wait_until, until)
        return self._refusal("public", 0, until)

    def violations(self) -> int:
        """Return every limit answer given (429s, frequency-limit errors, lockouts)."""
        return sum(s.limited for s in self.clients.values())

    def reset(self) -> None:
        """Forget every count, wait and lockout."""
        self.scopes.clear()
        self.clients.clear()

    @staticmethod
    def _headers(remain: int, until: float) -> dict[str, str]:
        return {REMAIN: str(remain), EXPIRE: str(int(until * 1000))}

    def _refusal(self, group: str, remain: int, until: float) -> ApiError:
        headers = self._headers(remain, until)
        if group == "public":
            return ApiError(429, PUBLIC_LIMITED[0], PUBLIC_LIMITED[1], headers=headers)
        return ApiError(200, PRIVATE_LIMITED[0], PRIVATE_LIMITED[1], headers=headers)
