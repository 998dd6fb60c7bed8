"""One exchange request as every step of the path sees it, built once at the edge.

:class:`Request` carries what the caller asked (exchange, endpoint, params) read once: the
parsed :class:`~exchanges.endpoints.Endpoint` (ccxt method or REST path, read or write, its
breaker class), the limiter priority, the cache digest and the request's :class:`Deadline`.
Nothing downstream re-parses the endpoint string or invents a timeout of its own: the
limiter waits at most until the deadline, retries stop before it, and the exchange call is
cut off at it.

:class:`Attempt` is one try of a request at the exchange. The ccxt hook
(``exchanges/limited.py``) reads it from a context variable: it waits in the limiter within
the deadline, counts the time spent waiting, calls :meth:`Attempt.admit` right before the
first HTTP request leaves (where the breaker grants the call, so a half-open trial is only
taken once budget is in hand) and times the wire alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any

from exchanges.endpoints import Endpoint
from ratelimit.pools import Priority

_priority: ContextVar[Priority | None] = ContextVar("crypto_ai_request_priority", default=None)
_attempt: ContextVar[Attempt | None] = ContextVar("crypto_ai_request_attempt", default=None)


@contextlib.contextmanager
def request_priority(priority: Priority) -> Iterator[None]:
    """Make the requests built inside the block use ``priority`` at the limiter."""
    token = _priority.set(priority)
    try:
        yield
    finally:
        _priority.reset(token)


def current_priority() -> Priority | None:
    """Return the priority set by an enclosing :func:`request_priority`, if any."""
    return _priority.get()


def request_digest(exchange: str, endpoint: str, params: Mapping[str, Any] | None) -> str:
    """Return a stable digest of a request (exchange, endpoint, sorted params)."""
    text = json.dumps([exchange, endpoint, dict(params or {})], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Deadline:
    """A point on the monotonic clock after which the request's caller has given up."""

    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        """Return the deadline ``seconds`` from now."""
        return cls(time.monotonic() + seconds)

    def left(self) -> float:
        """Return the seconds left (0 once passed)."""
        return max(0.0, self.at - time.monotonic())

    def within(self, seconds: float) -> float:
        """Return ``seconds``, cut to what is left."""
        return min(seconds, self.left())


@dataclass(frozen=True)
class Request:
    """One logical exchange call, parsed once; see the module docstring."""

    exchange: str
    endpoint: Endpoint
    params: Mapping[str, Any]
    deadline: Deadline
    priority: Priority | None = None
    base_url: str | None = None
    digest: str = ""

    @classmethod
    def build(
        cls,
        exchange: str,
        endpoint: str,
        params: Mapping[str, Any] | None = None,
        *,
        timeout: float,
        priority: Priority | None = None,
    ) -> Request:
        """Return the request; the priority defaults to the enclosing request_priority."""
        params = dict(params or {})
        return cls(
            exchange=exchange,
            endpoint=Endpoint.parse(endpoint),
            params=params,
            deadline=Deadline.after(timeout),
            priority=priority if priority is not None else current_priority(),
            digest=request_digest(exchange, endpoint, params),
        )

    @property
    def name(self) -> str:
        """Return the endpoint as the caller wrote it."""
        return self.endpoint.text

    def to(
        self,
        endpoint: str,
        params: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Request:
        """Return a request to another endpoint with the same priority, under the same
        deadline (or a new one ``timeout`` seconds from now)."""
        params = dict(params or {})
        return replace(
            self,
            endpoint=Endpoint.parse(endpoint),
            params=params,
            digest=request_digest(self.exchange, endpoint, params),
            deadline=self.deadline if timeout is None else Deadline.after(timeout),
        )

    def via(self, base_url: str) -> Request:
        """Return the same request sent to an alternative base URL."""
        return replace(self, base_url=base_url)


@dataclass
class Attempt:
    """One try of a request: the limiter waits, the wire time and the breaker's grant."""

    request: Request
    admit: Callable[[], Awaitable[bool]] | None = None
    #: HTTP requests sent so far; the first one asks ``admit``.
    sent: int = 0
    waited: float = 0.0
    wire: float = 0.0
    #: True when the breaker granted this attempt the half-open trial, which lasts
    #: ``trial_seconds`` before the breaker lets another caller try.
    trial: bool = False
    trial_seconds: float = 0.0
    admitted_at: float | None = field(default=None, repr=False)

    async def before_send(self) -> None:
        """Ask the breaker right before the first HTTP request leaves (see the module doc)."""
        if self.sent == 0 and self.admit is not None:
            self.trial = await self.admit()
            self.admitted_at = time.monotonic()
        self.sent += 1

    def max_wait(self, limit: float) -> float:
        """Return how long the next limiter wait may take.

        Within the deadline; and a trial holder's later requests within the trial's time,
        so the breaker never hands a second trial out while this one still waits.
        """
        wait = self.request.deadline.within(limit)
        if self.trial and self.admitted_at is not None:
            spent = time.monotonic() - self.admitted_at
            wait = min(wait, max(0.0, self.trial_seconds - spent))
        return wait


@contextlib.contextmanager
def attempting(attempt: Attempt) -> Iterator[Attempt]:
    """Make ``attempt`` the one the ccxt hook sees inside the block."""
    token = _attempt.set(attempt)
    try:
        yield attempt
    finally:
        _attempt.reset(token)


def current_attempt() -> Attempt | None:
    """Return the attempt being made, if the call came through the request path."""
    return _attempt.get()
