"""What the LLM really costs: the tokens the server reports, per call, run stage and UTC day.

The adapter (``llm/openai_compatible.py``) calls :func:`check_daily_budget` before a call and
:func:`record_call` after every call, answered or failed, with the ``usage`` the server
reported (None when it reported none). ``record_call``

- emits ``llm.usage`` (``core.events``), which monitoring turns into
  ``crypto_ai_llm_tokens_total{model,kind}``, ``crypto_ai_llm_calls_total{model,outcome}``
  and the ``crypto_ai_llm_call_seconds{model,outcome}`` histogram;
- adds to the fleet's counters of the UTC day (``<p>fleet:llm:<day>``), which
  ``crypto-ai status`` shows and ``llm.budget_per_day`` is checked against;
- adds to the tally of the run stage it ran in when one is open (:func:`stage_scope`):
  ``<p>run:<r>:<x>:<s>:llm`` per stage and ``<p>run:<r>:llm`` for the whole run, which the
  run's reports show.

The counters live in a :class:`UsageStore`: :class:`RedisUsage` (fleet-wide; every worker
process installs one through ``tasks.context.install``) or, until one is installed (a
script, ``crypto-ai llm check``), a :class:`MemoryUsage` of this process alone. Only
numbers are stored: never a prompt, an answer or a key.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol, cast

import redis

from agents.llm import LLMBudgetError, brief
from core.config import LLMConfig
from core.events import emit
from core.keys import KeySpace

log = logging.getLogger(__name__)

#: How long a day's counters stay in Redis (``crypto-ai status`` reads today's).
DAY_TTL = 4 * 86400
#: How long a run's tallies stay in Redis: as long as its stage outputs.
RUN_TTL = 7 * 86400
#: What a store can fail with; recording never breaks the call it records.
STORE_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, OSError)
#: The whole-number counters of a tally (``seconds`` and ``cost`` are floats).
COUNTS = ("calls", "failed", "unmetered", "prompt_tokens", "completion_tokens")


@dataclass(frozen=True)
class Usage:
    """LLM calls added up: how many, how many failed, the tokens reported, time and cost.

    ``unmetered`` counts the calls whose server reported no usage (most failures): their
    tokens are unknown and not in the totals. ``cost`` is None when no price is configured.
    """

    calls: int = 0
    failed: int = 0
    unmetered: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    cost: float | None = None

    @property
    def tokens(self) -> int:
        """Return the prompt and completion tokens together."""
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        """Return both tallies added up (a cost is known if either knows one)."""
        costs = [c for c in (self.cost, other.cost) if c is not None]
        return Usage(
            calls=self.calls + other.calls,
            failed=self.failed + other.failed,
            unmetered=self.unmetered + other.unmetered,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            seconds=self.seconds + other.seconds,
            cost=sum(costs) if costs else None,
        )

    def as_dict(self) -> dict[str, Any]:
        """Return the tally as JSON-able data, with ``tokens`` added."""
        return {**asdict(self), "tokens": self.tokens}

    @classmethod
    def from_counters(cls, counters: Mapping[str, float]) -> Usage:
        """Return the tally of a store's counters (missing ones are zero)."""
        ints = {name: int(counters.get(name, 0)) for name in COUNTS}
        cost = counters.get("cost")
        return cls(
            **ints,
            seconds=float(counters.get("seconds", 0.0)),
            cost=None if cost is None else float(cost),
        )


class Call(NamedTuple):
    """One finished LLM call as it is counted: numbers and labels, no text."""

    model: str
    method: str
    outcome: str
    prompt_tokens: int | None
    completion_tokens: int | None
    seconds: float
    cost: float | None

    def counters(self) -> dict[str, float]:
        """Return what this call adds to each counter (zeros left out)."""
        added: dict[str, float] = {
            "calls": 1,
            "failed": int(self.outcome != "ok"),
            "unmetered": int(self.prompt_tokens is None and self.completion_tokens is None),
            "prompt_tokens": self.prompt_tokens or 0,
            "completion_tokens": self.completion_tokens or 0,
            "seconds": self.seconds,
        }
        if self.cost is not None:
            added["cost"] = self.cost
        return {name: value for name, value in added.items() if value or name == "calls"}


class StageRef(NamedTuple):
    """The run stage an LLM call is made for: run id, exchange, symbol and stage name."""

    run_id: str
    exchange: str
    symbol: str
    stage: str


class UsageStore(Protocol):
    """Where the counters live: this process's memory or the fleet's Redis."""

    def add(self, call: Call, stage: StageRef | None) -> None:
        """Add one call to today's counters and, with ``stage``, to its run's tallies."""
        ...

    def day(self, day: str | None = None) -> Usage:
        """Return the fleet's usage on a UTC day (``YYYY-MM-DD``; None: today)."""
        ...

    def stages(self, run_id: str, exchange: str, symbol: str) -> dict[str, Usage]:
        """Return one symbol's usage in a run, per stage."""
        ...

    def run(self, run_id: str) -> Usage:
        """Return a whole run's usage, every symbol and stage together."""
        ...


def utc_day(at: float) -> str:
    """Return the UTC day (``YYYY-MM-DD``) of an epoch time."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d")


class MemoryUsage:
    """Counters in this process's memory: the store until a fleet-wide one is installed."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, ...], dict[str, float]] = {}

    def _add(self, where: tuple[str, ...], added: Mapping[str, float]) -> None:
        counters = self._counters.setdefault(where, {})
        for name, value in added.items():
            counters[name] = counters.get(name, 0) + value

    def add(self, call: Call, stage: StageRef | None) -> None:
        """Add one call to today's counters and, with ``stage``, to its run's tallies."""
        added = call.counters()
        with self._lock:
            self._add(("day", utc_day(self._clock())), added)
            if stage is not None:
                self._add(("stage", *stage), added)
                self._add(("run", stage.run_id), added)

    def day(self, day: str | None = None) -> Usage:
        """Return this process's usage on a UTC day (None: today)."""
        with self._lock:
            counters = self._counters.get(("day", day or utc_day(self._clock())), {})
            return Usage.from_counters(counters)

    def stages(self, run_id: str, exchange: str, symbol: str) -> dict[str, Usage]:
        """Return one symbol's usage in a run, per stage."""
        with self._lock:
            return {
                where[4]: Usage.from_counters(counters)
                for where, counters in self._counters.items()
                if where[:4] == ("stage", run_id, exchange, symbol)
            }

    def run(self, run_id: str) -> Usage:
        """Return a whole run's usage."""
        with self._lock:
            return Usage.from_counters(self._counters.get(("run", run_id), {}))


class RedisUsage:
    """Counters in the fleet's Redis: hashes of HINCRBY'd numbers, each with a TTL.

    ``client`` and ``keys`` may be callables returning them, so a process builds (and after
    a fork rebuilds) its client on first use. Stage tallies are the fields
    ``<stage>:<counter>`` of the symbol's hash.

    Warning: blocking calls, one round trip each; they run on the caller's thread (an LLM
    call's is seconds long, the round trip a fraction of a millisecond).
    """

    def __init__(
        self,
        client: redis.Redis | Callable[[], redis.Redis],
        keys: KeySpace | Callable[[], KeySpace],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._keys = keys
        self._clock = clock

    def _redis(self) -> redis.Redis:
        return self._client if isinstance(self._client, redis.Redis) else self._client()

    def _keyspace(self) -> KeySpace:
        return self._keys if isinstance(self._keys, KeySpace) else self._keys()

    def add(self, call: Call, stage: StageRef | None) -> None:
        """Add one call to today's counters and, with ``stage``, to its run's tallies."""
        keys, added = self._keyspace(), call.counters()
        pipe = self._redis().pipeline(transaction=False)
        day = keys.llm_usage_day(utc_day(self._clock()))
        _increment(pipe, day, added)
        pipe.expire(day, DAY_TTL)
        if stage is not None:
            symbol = keys.stage(stage.run_id, stage.exchange, stage.symbol, "llm")
            _increment(pipe, symbol, {f"{stage.stage}:{k}": v for k, v in added.items()})
            run = keys.llm_usage_run(stage.run_id)
            _increment(pipe, run, added)
            pipe.expire(symbol, RUN_TTL)
            pipe.expire(run, RUN_TTL)
        pipe.execute()

    def _counters(self, key: str) -> dict[str, float]:
        raw = cast(dict[bytes, bytes], self._redis().hgetall(key))
        return {name.decode(): float(value) for name, value in raw.items()}

    def day(self, day: str | None = None) -> Usage:
        """Return the fleet's usage on a UTC day (None: today)."""
        key = self._keyspace().llm_usage_day(day or utc_day(self._clock()))
        return Usage.from_counters(self._counters(key))

    def stages(self, run_id: str, exchange: str, symbol: str) -> dict[str, Usage]:
        """Return one symbol's usage in a run, per stage."""
        key = self._keyspace().stage(run_id, exchange, symbol, "llm")
        per_stage: dict[str, dict[str, float]] = {}
        for name, value in self._counters(key).items():
            stage, _, counter = name.rpartition(":")
            per_stage.setdefault(stage, {})[counter] = value
        return {stage: Usage.from_counters(c) for stage, c in sorted(per_stage.items())}

    def run(self, run_id: str) -> Usage:
        """Return a whole run's usage."""
        return Usage.from_counters(self._counters(self._keyspace().llm_usage_run(run_id)))


def _increment(pipe: Any, key: str, added: Mapping[str, float]) -> None:
    for name, value in added.items():
        if isinstance(value, int):
            pipe.hincrby(key, name, value)
        else:
            pipe.hincrbyfloat(key, name, value)


_installed: list[UsageStore] = []
_lock = threading.Lock()
_stage: contextvars.ContextVar[StageRef | None] = contextvars.ContextVar(
    "llm_usage_stage", default=None
)


def install(store: UsageStore | None) -> None:
    """Make ``store`` the one this process counts into (None: this process's memory)."""
    with _lock:
        _installed[:] = [store] if store is not None else []


def store() -> UsageStore:
    """Return the installed store (a process-local :class:`MemoryUsage` until one is)."""
    with _lock:
        if not _installed:
            _installed.append(MemoryUsage())
        return _installed[0]


@contextlib.contextmanager
def stage_scope(run_id: str, exchange: str, symbol: str, stage: str) -> Iterator[StageRef]:
    """Count the LLM calls made inside the block (and its tasks) to one run stage."""
    ref = StageRef(run_id, exchange, symbol, stage)
    token = _stage.set(ref)
    try:
        yield ref
    finally:
        _stage.reset(token)


def call_cost(config: LLMConfig, prompt_tokens: int, completion_tokens: int) -> float | None:
    """Return what the tokens cost at the configured prices (None when no price is set)."""
    if config.price_per_1k_tokens is None:
        return None
    prompt_price = config.price_per_1k_tokens
    completion_price = config.price_per_1k_completion_tokens or prompt_price
    return (prompt_tokens * prompt_price + completion_tokens * completion_price) / 1000


def record_call(
    config: LLMConfig,
    *,
    model: str,
    method: str,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    seconds: float,
    outcome: str,
) -> None:
    """Count one finished LLM call (``outcome`` "ok" or why it failed) with its real usage.

    Never raises for the store: a call the store could not count is logged and still
    reaches the metrics.
    """
    cost = None
    if prompt_tokens is not None or completion_tokens is not None:
        cost = call_cost(config, prompt_tokens or 0, completion_tokens or 0)
    call = Call(model, method, outcome, prompt_tokens, completion_tokens, seconds, cost)
    emit("llm.usage", **call._asdict())
    try:
        store().add(call, _stage.get())
    except STORE_ERRORS as exc:
        log.warning("the usage of an LLM call (%s) was not recorded: %s", model, brief(exc))


def check_daily_budget(config: LLMConfig) -> None:
    """Raise LLMBudgetError when the fleet has spent ``llm.budget_per_day`` tokens today (UTC).

    Warning: calls already in flight when the budget runs out still finish and count, so a
    day can end a few calls over it. When the day's spend cannot be read the call is refused
    too: a budget that cannot be checked is not spent blindly.
    """
    budget = config.budget_per_day
    if budget is None:
        return
    try:
        spent = store().day().tokens
    except STORE_ERRORS as exc:
        raise LLMBudgetError(
            f"the day's LLM spend cannot be read ({brief(exc)}), so llm.budget_per_day "
            "cannot be checked"
        ) from exc
    if spent >= budget:
        raise LLMBudgetError(
            f"llm.budget_per_day is spent: {spent:,} of {budget:,} tokens used today (UTC); "
            "the rules answer until 00:00 UTC"
        )
