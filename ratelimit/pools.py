"""The limiter's vocabulary: pools, what an endpoint costs, priorities and decisions."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Literal

Algorithm = Literal["token_bucket", "sliding_window", "leaky_bucket", "fixed_window"]


class Priority(enum.IntEnum):
    """Request priority: HIGH may use the reserved share of every pool."""

    HIGH = 0
    MEDIUM = 1
    LOW = 2

    @classmethod
    def parse(cls, value: Priority | str | int) -> Priority:
        """Return the priority for ``"high"``, ``Priority.HIGH`` or ``0``."""
        if isinstance(value, Priority):
            return value
        if isinstance(value, str):
            try:
                return cls[value.upper()]
            except KeyError:
                raise ValueError(
                    f"unknown priority {value!r}; expected high, medium or low"
                ) from None
        return cls(value)


@dataclass(frozen=True)
class PoolSpec:
    """One budget an exchange counts against, e.g. Binance REQUEST_WEIGHT per minute.

    ``limit`` is the bucket capacity (token and leaky buckets) or the weight allowed per
    window (windows); ``rate`` is the refill rate (token bucket) or the leak rate (leaky
    bucket), per second; ``window`` is in seconds. ``reserve`` is the share of ``limit``
    that only HIGH priority may use.
    """

    name: str
    algorithm: Algorithm
    limit: float
    window: float = 0.0
    rate: float = 0.0
    reserve: float = 0.0

    def __post_init__(self) -> None:
        problems = []
        if self.limit <= 0:
            problems.append(f"limit must be positive, got {self.limit}")
        if self.algorithm in ("sliding_window", "fixed_window") and self.window <= 0:
            problems.append(f"a {self.algorithm} needs a positive window, got {self.window}")
        if self.algorithm in ("token_bucket", "leaky_bucket") and self.rate <= 0:
            problems.append(f"a {self.algorithm} needs a positive rate, got {self.rate}")
        if not 0.0 <= self.reserve < 1.0:
            problems.append(f"reserve must be in [0, 1), got {self.reserve}")
        if problems:
            raise ValueError(f"pool {self.name!r}: " + "; ".join(problems))

    def reserved_units(self, priority: Priority) -> float:
        """Return the units this priority must leave untouched."""
        return 0.0 if priority is Priority.HIGH else self.limit * self.reserve

    def scaled(self, factor: float) -> PoolSpec:
        """Return this pool with its limit and rate multiplied by ``factor``."""
        return PoolSpec(
            self.name,
            self.algorithm,
            self.limit * factor,
            self.window,
            self.rate * factor,
            self.reserve,
        )


@dataclass(frozen=True)
class PoolCheck:
    """One pool's answer: allowed, and if not, how long until it would be."""

    allowed: bool
    retry_after: float
    remaining: float


@dataclass(frozen=True)
class RateLimitResult:
    """The limiter's answer for one request over every pool it touches.

    ``retry_after`` is 0 when allowed, else the seconds until every denying pool (and any
    cooldown) would admit this weight; ``math.inf`` means it never can (weight too large).
    ``remaining`` is each pool's remaining units after this request (or now, when denied).
    ``at`` is the decision's time on the limiter's clock (Redis TIME for the Redis backend).
    """

    allowed: bool
    retry_after: float = 0.0
    remaining: dict[str, float] = field(default_factory=dict)
    denied_by: str | None = None
    cooldown: bool = False
    waited: float = 0.0
    at: float = 0.0

    @property
    def never(self) -> bool:
        """Return True when the request can never be admitted (its weight exceeds a pool)."""
        return math.isinf(self.retry_after)
