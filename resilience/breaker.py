"""Circuit breakers shared by the whole fleet, one per exchange and endpoint class.

pybreaker keeps its state machine in each process and its bundled Redis storage updates
the shared state with separate GET/INCR/SET calls, so processes race and each sends its own
half-open trial. Here every transition is one Lua script on the Redis clock
(``resilience/lua/breaker.lua``): the fleet trips together, and when the recovery time has
passed exactly one caller in the fleet gets the trial call.

Rules: in ``closed``, ``failure_threshold`` failures within ``failure_window`` seconds open
the breaker (successes do not reset the count: an exchange failing half its calls is
unhealthy). ``open`` refuses every call for ``recovery_timeout`` seconds; then one trial is
allowed (``half_open``); its success closes the breaker, its failure opens it again. A trial
that never reports is replaced after ``trial_timeout``; one whose caller gave up (cancelled,
its deadline passed) is released at once. Only failures that say the exchange is unwell
count (timeouts of the exchange call, 5xx, resets, malformed answers); business errors,
rate-limit waits, the caller's own timeout or cancellation and bugs of ours never do.

The breaker is asked after the limiter admitted the call (``resilience/attempt.py``), so a
trial never waits for budget while the fleet waits for it.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass
from typing import Any

import redis

from core.errors import CircuitOpenError, OutcomeUnknownError, RetryableError
from core.events import emit
from core.keys import KeySpace
from ratelimit.backends.clients import RedisClients
from resilience.scripts import lua

log = logging.getLogger(__name__)

ENDPOINT_CLASSES = ("public", "private", "orders")
#: How many recent transitions a breaker object remembers (for tests and status views).
TRANSITIONS_KEPT = 64
#: How long a process trusts a "closed" answer before asking Redis again. Asking costs a
#: round trip per request; trusting it means a process may send for this long after the
#: fleet opened the breaker. Open and half-open answers are never trusted: always asked.
CLOSED_TRUST = 0.05


def counts_as_failure(error: BaseException) -> bool:
    """Return True for errors that say the exchange is unwell (never business errors)."""
    if isinstance(error, CircuitOpenError):
        return False
    return isinstance(error, RetryableError | OutcomeUnknownError)


@dataclass(frozen=True)
class BreakerAnswer:
    """One answer of the shared breaker."""

    allowed: bool
    state: str
    retry_after: float
    transition: str
    trips: int


class SharedBreaker:
    """A circuit breaker whose state lives in Redis and changes atomically."""

    def __init__(
        self,
        client: redis.Redis | RedisClients,
        exchange: str,
        endpoint_class: str,
        *,
        failure_threshold: int = 5,
        recovery_timeout: float = 60.0,
        failure_window: float = 60.0,
        trial_timeout: float = 30.0,
        keys: KeySpace | None = None,
    ) -> None:
        self.name = f"{exchange}:{endpoint_class}"
        self.key = (keys or KeySpace()).breaker(exchange, endpoint_class)
        self.trial_timeout = float(trial_timeout)
        self.args = [
            str(failure_threshold),
            repr(float(recovery_timeout)),
            repr(float(failure_window)),
            repr(float(trial_timeout)),
        ]
        clients = client if isinstance(client, RedisClients) else RedisClients(client)
        self._script = clients.script(lua("breaker.lua"))
        self.transitions: collections.deque[str] = collections.deque(maxlen=TRANSITIONS_KEPT)
        self._closed_until = 0.0

    async def _call(self, op: str, trial: bool = False) -> BreakerAnswer:
        reply = await self._script.run([self.key], [op, *self.args, "1" if trial else "0"])
        return self._answer(reply)

    def _answer(self, reply: Any) -> BreakerAnswer:
        allowed, state, wait, transition, trips = reply
        answer = BreakerAnswer(
            bool(allowed), _text(state), float(_text(wait)), _text(transition), int(trips)
        )
        trusted = answer.allowed and answer.state == "closed"
        self._closed_until = time.monotonic() + CLOSED_TRUST if trusted else 0.0
        if answer.transition:
            self.transitions.append(answer.transition)
            emit("breaker.transition", breaker=self.name, transition=answer.transition)
            log.warning(
                "circuit breaker %s: %s (trips so far: %d)",
                self.name,
                answer.transition,
                answer.trips,
            )
        return answer

    def _refused(self, answer: BreakerAnswer) -> CircuitOpenError:
        return CircuitOpenError(
            f"circuit {self.name} is {answer.state}; next try in {answer.retry_after:.1f}s",
            retry_after=answer.retry_after,
        )

    def _trusted(self) -> BreakerAnswer | None:
        if time.monotonic() < self._closed_until:
            return BreakerAnswer(True, "closed", 0.0, "", -1)
        return None

    async def allow(self) -> BreakerAnswer:
        """Ask to make a call; raise CircuitOpenError when the breaker refuses."""
        answer = self._trusted() or await self._call("allow")
        if not answer.allowed:
            raise self._refused(answer)
        return answer

    async def check(self) -> None:
        """Raise CircuitOpenError if a call would be refused now; change nothing.

        For callers about to wait on something else first (the limiter, a batch window):
        they learn at once that the call cannot go out. ``allow()`` still decides the call.
        """
        answer = self._trusted() or await self._call("peek")
        if not answer.allowed:
            raise self._refused(answer)

    async def record(self, error: BaseException | None, *, trial: bool = False) -> BreakerAnswer:
        """Report a call's outcome; business errors and our own waits count as success.

        ``trial`` says the call was the half-open trial (``allow()`` answered ``half_open``).
        """
        if error is not None and counts_as_failure(error):
            return await self._call("failure", trial)
        return await self._call("success", trial)

    async def release(self, *, trial: bool) -> None:
        """Say the call ended without an answer of the exchange (its caller gave up)."""
        if trial:
            await self._call("release", trial)

    def snapshot(self) -> dict[str, Any]:
        """Return the breaker's stored state and trip count (blocking; for status views)."""
        reply = self._script([self.key], ["state", *self.args, "0"])
        return {"state": _text(reply[1]), "trips": int(reply[4])}

    def state(self) -> str:
        """Return the breaker's stored state (blocking; for status views)."""
        return str(self.snapshot()["state"])


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
