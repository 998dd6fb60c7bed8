"""The port every limiter backend implements: decide-and-charge, settle, observe, cool down.

Implementations live in ``ratelimit/backends/``: ``redis.py`` (atomic Lua on the Redis
clock, shared by the fleet) and ``memory.py`` (one process, the pure reference algorithms;
the unit-test double and the fallback when Redis is unreachable).

Each operation is first built as an :class:`Op` without any I/O (``decision``,
``settlement``, ``observation``, ``cooling``), then run: blocking with ``run`` (sync
callers) or awaited with ``arun`` (the request path, which never blocks its event loop).
The two forms differ only in that one call, so they cannot drift apart.
``decide``/``settle``/``observe``/``cooldown`` are the blocking shortcuts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, Protocol, TypeVar

from core.errors import LimiterUnavailableError
from ratelimit.pools import PoolSpec, Priority, RateLimitResult

T = TypeVar("T")
U = TypeVar("U")


@dataclass(frozen=True)
class Charge:
    """The weight one request spends in one pool."""

    pool: PoolSpec
    weight: float


@dataclass(frozen=True)
class Decision:
    """One decision over several pools: admit (and ``charge``) only if every pool allows it.

    With a ``ticket``, the charge in each sliding-window pool is held: stamped ``hold``
    seconds ahead, so that it counts while the request is in flight, until the request's
    :class:`Settlement` re-stamps it at the completion time (``ratelimit.algorithms``).
    ``now`` overrides the clock and exists only for the contract tests.
    """

    exchange: str
    charges: tuple[Charge, ...]
    priority: Priority
    charge: bool = True
    now: float | None = None
    ticket: str | None = None
    hold: float = 0.0


@dataclass(frozen=True)
class Settlement:
    """A request admitted under ``ticket`` has completed: re-stamp its sliding-window charges
    at the completion time (``now`` only in the contract tests)."""

    exchange: str
    charges: tuple[Charge, ...]
    ticket: str
    now: float | None = None

    @property
    def sliding(self) -> tuple[Charge, ...]:
        """Return the charges that a settlement re-stamps (sliding-window pools)."""
        return tuple(c for c in self.charges if c.pool.algorithm == "sliding_window")


def _unavailable(error: LimiterUnavailableError) -> Any:
    raise error


@dataclass(frozen=True)
class Op(Generic[T]):
    """One backend operation, built without I/O: a script call (``script``, ``keys``,
    ``args``) whose reply ``parse`` reads, or a ``local`` computation; ``failed`` answers
    when the backend cannot be reached (by default: raise)."""

    parse: Callable[[Any], T]
    script: Any = None
    keys: Sequence[str] = ()
    args: Sequence[Any] = ()
    local: Callable[[], Any] | None = None
    failed: Callable[[LimiterUnavailableError], T] = _unavailable

    def then(self, after: Callable[[T], U]) -> Op[U]:
        """Return the same operation with ``after`` applied to its result."""
        parse, failed = self.parse, self.failed
        return Op(
            lambda reply: after(parse(reply)),
            self.script,
            self.keys,
            self.args,
            self.local,
            lambda error: after(failed(error)),
        )

    def on_failure(self, failed: Callable[[LimiterUnavailableError], T]) -> Op[T]:
        """Return the same operation answering ``failed(error)`` when unreachable."""
        return replace(self, failed=failed)


class LimiterBackend(Protocol):
    """Where pool state lives and how a decision over several pools is made atomically."""

    def decision(self, decision: Decision) -> Op[RateLimitResult]:
        """Admit (and charge) the request only if every pool allows it and no cooldown runs."""
        ...

    def settlement(self, settlement: Settlement) -> Op[None]:
        """Re-stamp the request's held sliding-window charges at the completion time."""
        ...

    def observation(
        self, exchange: str, usage: Sequence[tuple[PoolSpec, float]], *, now: float | None = None
    ) -> Op[None]:
        """Raise each pool's count to the usage the exchange reported."""
        ...

    def cooling(self, exchange: str, seconds: float, pool: str | None, reason: str) -> Op[float]:
        """Refuse the pool (or, with None, the whole exchange) for ``seconds``; never shorten.

        The operation's result is the cooldown's length in seconds.
        """
        ...

    def run(self, op: Op[T]) -> T:
        """Run ``op``, blocking."""
        ...

    async def arun(self, op: Op[T]) -> T:
        """Run ``op`` without blocking the event loop."""
        ...


class Shortcuts:
    """Blocking ``decide``/``observe``/``cooldown`` for a backend's ops (tests, sync code)."""

    def decide(
        self: LimiterBackend,
        exchange: str,
        charges: Sequence[Charge],
        priority: Priority,
        *,
        charge: bool = True,
        now: float | None = None,
        ticket: str | None = None,
        hold: float = 0.0,
    ) -> RateLimitResult:
        """Run :meth:`LimiterBackend.decision`, blocking."""
        decision = Decision(exchange, tuple(charges), priority, charge, now, ticket, hold)
        return self.run(self.decision(decision))

    def settle(
        self: LimiterBackend,
        exchange: str,
        charges: Sequence[Charge],
        ticket: str,
        *,
        now: float | None = None,
    ) -> None:
        """Run :meth:`LimiterBackend.settlement`, blocking."""
        self.run(self.settlement(Settlement(exchange, tuple(charges), ticket, now)))

    def observe(
        self: LimiterBackend,
        exchange: str,
        usage: Sequence[tuple[PoolSpec, float]],
        *,
        now: float | None = None,
    ) -> None:
        """Run :meth:`LimiterBackend.observation`, blocking."""
        self.run(self.observation(exchange, usage, now=now))

    def cooldown(
        self: LimiterBackend, exchange: str, seconds: float, pool: str | None, reason: str
    ) -> float:
        """Run :meth:`LimiterBackend.cooling`, blocking."""
        return self.run(self.cooling(exchange, seconds, pool, reason))
