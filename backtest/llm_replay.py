"""The LLM rung in the replay: the live ladder at each decision time, every answer recorded.

At each decision time T, :class:`LLMStrategy` climbs the ladder the fleet's stages climb
(``tasks/stages.py``): the long and the short analyst (``agents.llm.ask_case``: LLM ->
cache -> rules), then the strategist (``agents.llm.ask_plan``: LLM -> rules), each through
``agents.llm.climb`` with the live prompts, the live checks of an answer against its data
and the live fallback reasons. The agents are shown only what the replay's ``Moment``
holds: the candles closed by T, the news published before T, the position held at T.

Every question goes through a :class:`Record`, keyed by the prompt's hash, the data time T
and the sampling index:

- in the record: the answer is served from it, with no request (``replayed``);
- not in it, an LLM configured: it is asked through the port the composition root hands in
  and written to the record with the model and the tokens the server reported
  (``llm.usage`` events, ``llm/usage.py``). In ``crypto-ai backtest`` that port is the
  fleet's adapter (``llm/openai_compatible.py``) without the fleet's Redis limiter, like
  ``crypto-ai llm check`` (``connect``); in a grid cell on a fleet worker it is the worker's
  own adapter, behind the fleet's shared LLM limiter, run on the worker's event loop
  (:class:`HostLLM`). An
  answer off the schema or cut at the length limit is recorded as that failure, so a rerun
  falls to the rules the same way, for the same reason, at no cost;
- not in it and no LLM configured: the rules answer, and the decision says why.

A failure that is not the answer's (a timeout, the server unreachable, a 429, the daily
budget) is not recorded: a rerun asks again.

The record's file is ``backtest/llm_record.py``'s (JSON lines, and why).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol, TypeVar

from pydantic import BaseModel

from agents import news as news_lib
from agents.analysts import analyse
from agents.llm import (
    LLM_CACHE_SECONDS,
    NO_ATR,
    NO_LLM,
    CaseAnswer,
    LLMAnswerError,
    LLMError,
    LLMPort,
    LLMUnavailableError,
    answer_of,
    ask_case,
    ask_plan,
    case_from_answer,
    climb,
    fallback_reason,
)
from agents.strategy import decide
from agents.types import AnalystReport, Rung, TradePlan
from backtest.llm_record import Entry, LLMTally, Record, RecordError, prompt_hash
from backtest.replay import Decided, Moment
from core import events
from core.config import LLMConfig

__all__ = [
    "Connect", "Entry", "HostLLM", "LLMStrategy", "Record", "RecordError", "Runner",
    "llm_strategy",
]  # fmt: skip

T = TypeVar("T", bound=BaseModel)
R = TypeVar("R")


class _Said(LLMError):
    """An LLM failure whose fallback reason is already written: ``line``."""

    def __init__(self, line: str) -> None:
        super().__init__(line)
        self.line = line


class RecordedFailure(_Said, LLMAnswerError):
    """The record says this question's answer did not fit the schema."""


class NotRecorded(_Said, LLMUnavailableError):
    """No LLM is configured and the record holds no answer for the question."""


#: The LLM calls (``llm.usage`` events) of the question being asked, and who asks it.
_calls: contextvars.ContextVar[tuple[object, list[dict[str, Any]]] | None] = contextvars.ContextVar(
    "backtest_llm_calls", default=None
)


class _Quiet(logging.Filter):
    """Drop the ladder's warning per fallback: each decision row says why instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno != logging.WARNING


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    ladder = logging.getLogger("agents.llm")
    quiet = _Quiet()
    ladder.addFilter(quiet)
    try:
        yield
    finally:
        ladder.removeFilter(quiet)


async def _noting(said: list[str], asked: Awaitable[T]) -> T:
    """Return ``asked``'s answer; note the written reason of a replayed failure first."""
    try:
        return await asked
    except _Said as exc:
        said.append(exc.line)
        raise


class _Port:
    """The LLM port the agents are given at one data time: the record first."""

    def __init__(self, strategy: LLMStrategy, data_ms: int) -> None:
        self._strategy, self._data_ms = strategy, data_ms

    async def complete(self, schema: type[T], system: str, user: str) -> T:
        """Return the recorded answer, or ask the LLM and record it (module docstring)."""
        return await self._strategy.answer(schema, system, user, self._data_ms)


_loop: list[asyncio.AbstractEventLoop] = []
_loop_lock = threading.Lock()


def _run(coro: Coroutine[Any, Any, R]) -> R:
    """Run ``coro`` on this process's LLM loop (started on first use) and return its result.

    One loop for the process, as the live runtime keeps (``workers/runtime.py``): the
    OpenAI client's connection pool is shared by every adapter of one server and belongs to
    the loop it was first used on, so a second strategy on a fresh loop would reuse
    connections of a closed one.
    """
    with _loop_lock:
        if not _loop:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="backtest-llm", daemon=True).start()
            _loop.append(loop)
    return asyncio.run_coroutine_threadsafe(coro, _loop[0]).result()


class Runner(Protocol):
    """Runs a coroutine to its end from synchronous code and returns its result."""

    def __call__(self, coro: Coroutine[Any, Any, R], /) -> R:
        """Return ``coro``'s result (raise what it raised)."""
        ...


@dataclass(frozen=True)
class HostLLM:
    """The LLM of the process a replay runs in, already built: its ``llm`` config, its port
    (None: no LLM configured) and the runner of its event loop.

    A fleet worker hands its own (``tasks/backtest.py``): the adapter behind the fleet's
    Redis-shared LLM limiter, on the worker's loop, where the adapter's connections live.
    """

    config: LLMConfig
    port: LLMPort | None
    run: Runner


class LLMStrategy:
    """The replay's strategy with the live LLM ladder and a record of its answers.

    ``port`` is the LLM (None: only recorded answers, the rules otherwise); ``sampling``
    picks which of K recorded samplings of every answer this run replays or asks; ``priced``
    says a price is configured, so a run that asks nothing costs 0 rather than None; ``run``
    runs each decision's coroutine (None: on this process's backtest loop, :func:`_run`).
    Use it as a context manager (or call :meth:`close`): it counts the LLM's calls until then.
    """

    def __init__(
        self,
        record: Record,
        port: LLMPort | None,
        *,
        sampling: int = 0,
        model: str | None = None,
        priced: bool = False,
        run: Runner | None = None,
    ) -> None:
        if sampling < 0:
            raise ValueError(f"sampling {sampling} is not 0 or more")
        self.record, self.port, self.sampling, self.model = record, port, sampling, model
        self._runner: Runner = run or _run
        self._counts: dict[str, Any] = dict.fromkeys(
            (
                "requests", "failed", "unmetered", "recorded", "replayed", "fallbacks",
                "prompt_tokens", "completion_tokens", "replayed_prompt_tokens",
                "replayed_completion_tokens",
            ),
            0,
        )  # fmt: skip
        self._costs: dict[str, float | None] = {
            "cost": 0.0 if priced else None,
            "replayed_cost": None,
        }
        self._cache: dict[str, tuple[int, CaseAnswer]] = {}
        events.subscribe(self._collect)

    def __call__(self, moment: Moment) -> Decided:
        """Return the plan for ``moment`` and the rung of each agent (module docstring)."""
        return self._runner(self.decide(moment))

    def tally(self) -> LLMTally:
        """Return the requests, recorded and replayed answers and tokens counted so far."""
        labels = LLMTally(model=self.model, record=str(self.record.path), sampling=self.sampling)
        return replace(
            labels,
            **self._counts,
            cost=self._costs["cost"],
            replayed_cost=self._costs["replayed_cost"],
        )

    def close(self) -> None:
        """Stop counting LLM calls (the process's LLM loop stays for the next strategy)."""
        events.unsubscribe(self._collect)

    def __enter__(self) -> LLMStrategy:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def decide(self, moment: Moment) -> Decided:
        """Return both cases weighed into a plan, as the live stages do, at the moment's T."""
        data_ms = int(moment.snapshot.taken_at.timestamp() * 1000)
        port = _Port(self, data_ms)
        long = await self._case(port, moment, "long", data_ms)
        short = await self._case(port, moment, "short", data_ms)
        plan = await self._plan(port, moment, long, short)
        rungs = (
            ("long", long.rung.value, long.fallback_reason),
            ("short", short.rung.value, short.fallback_reason),
            ("strategy", plan.rung.value, plan.fallback_reason),
        )
        return Decided(plan, rungs)

    async def _case(
        self, port: _Port, moment: Moment, side: Literal["long", "short"], data_ms: int
    ) -> AnalystReport:
        """Return one analyst's case: LLM -> the answer of up to 900 s before -> rules."""
        items = list(moment.news)
        score, count = news_lib.symbol_sentiment(items, moment.symbol)
        said: list[str] = []

        def ask() -> Awaitable[AnalystReport]:
            asked = ask_case(
                port,
                side,
                moment.symbol,
                features=moment.features,
                news=items,
                last=moment.snapshot.last,
            )
            return _noting(said, asked)

        def cached() -> AnalystReport | None:
            held = self._cache.get(side)
            if held is None or data_ms - held[0] > LLM_CACHE_SECONDS * 1000:
                return None
            return case_from_answer(side, held[1], Rung.CACHE)

        def remember(report: AnalystReport) -> None:
            self._cache[side] = (data_ms, answer_of(report))

        def rules() -> AnalystReport:
            return analyse(side, moment.features, score, count)

        with _quiet():
            report, rung, reason = await climb(ask, cached, rules, remember)
        reason = self._reason(rung, reason, said)
        return report.model_copy(update={"fallback_reason": reason})

    async def _plan(
        self, port: _Port, moment: Moment, long: AnalystReport, short: AnalystReport
    ) -> TradePlan:
        """Return the strategist's plan: LLM -> rules (no ATR: the rules, unasked)."""
        features, limits = moment.features, moment.limits

        def rules() -> TradePlan:
            return decide(moment.symbol, long, short, features, limits)

        if features.atr is None:
            self._counts["fallbacks"] += 1
            return rules().model_copy(update={"fallback_reason": NO_ATR})
        said: list[str] = []

        def ask() -> Awaitable[TradePlan]:
            asked = ask_plan(
                port,
                moment.symbol,
                features=features,
                long=long,
                short=short,
                limits=limits,
                holding=moment.holding,
                now=moment.snapshot.taken_at,
            )
            return _noting(said, asked)

        with _quiet():
            plan, rung, reason = await climb(ask, lambda: None, rules, lambda _: None)
        reason = self._reason(rung, reason, said)
        return plan.model_copy(update={"fallback_reason": reason})

    def _reason(self, rung: Rung, reason: str | None, said: list[str]) -> str | None:
        """Return why the LLM did not answer: a replayed failure's own words, or the ladder's."""
        if rung is Rung.LLM:
            return None
        self._counts["fallbacks"] += 1
        return said[-1] if said else reason

    async def answer(self, schema: type[T], system: str, user: str, data_ms: int) -> T:
        """Return the recorded answer to a question at ``data_ms``, or ask and record it."""
        digest = prompt_hash(schema, system, user)
        entry = self.record.get((digest, data_ms, self.sampling))
        if entry is not None:
            return self._replay(schema, entry)
        if self.port is None:
            at = datetime.fromtimestamp(data_ms / 1000, UTC).isoformat(timespec="minutes")
            raise NotRecorded(
                f"{NO_LLM}, and {self.record.path} has no answer to this prompt at {at} "
                f"(sampling {self.sampling})"
            )
        new = Entry(
            prompt_hash=digest,
            data_ms=data_ms,
            sampling=self.sampling,
            schema=schema.__name__,
            model=self.model,
            answer=None,
            failure=None,
            requests=0,
            prompt_tokens=None,
            completion_tokens=None,
            cost=None,
            system=system,
            user=user,
        )
        calls: list[dict[str, Any]] = []
        token = _calls.set((self, calls))
        try:
            value = await self.port.complete(schema, system, user)
        except LLMAnswerError as exc:  # the answer's fault: a rerun falls the same way
            self._store(replace(new, failure=fallback_reason(exc)), calls)
            raise
        except BaseException:
            self._spend(calls)
            raise
        finally:
            _calls.reset(token)
        self._store(replace(new, answer=value.model_dump(mode="json")), calls)
        return value

    def _replay(self, schema: type[T], entry: Entry) -> T:
        counts = self._counts
        counts["replayed"] += 1
        counts["replayed_prompt_tokens"] += entry.prompt_tokens or 0
        counts["replayed_completion_tokens"] += entry.completion_tokens or 0
        self._costs["replayed_cost"] = _plus(self._costs["replayed_cost"], entry.cost)
        if entry.failure is not None or entry.answer is None:
            raise RecordedFailure(entry.failure or "llm answer off schema: recorded without one")
        # a schema changed since the answer was recorded: a ValidationError, the rules answer
        return schema.model_validate(entry.answer)

    def _store(self, entry: Entry, calls: list[dict[str, Any]]) -> None:
        """Count the calls and write the entry with their model, tokens and cost."""
        self._spend(calls)
        prompt = [c["prompt_tokens"] for c in calls if c.get("prompt_tokens") is not None]
        completion = [
            c["completion_tokens"] for c in calls if c.get("completion_tokens") is not None
        ]
        cost = None
        for call in calls:
            cost = _plus(cost, call.get("cost"))
        models = [c["model"] for c in calls if c.get("model")]
        self.record.add(
            replace(
                entry,
                model=models[-1] if models else entry.model,
                requests=len(calls),
                prompt_tokens=sum(prompt) if prompt else None,
                completion_tokens=sum(completion) if completion else None,
                cost=cost,
            )
        )
        self._counts["recorded"] += 1

    def _spend(self, calls: list[dict[str, Any]]) -> None:
        counts = self._counts
        for call in calls:
            counts["requests"] += 1
            counts["failed"] += int(call.get("outcome") != "ok")
            prompt, completion = call.get("prompt_tokens"), call.get("completion_tokens")
            counts["unmetered"] += int(prompt is None and completion is None)
            counts["prompt_tokens"] += prompt or 0
            counts["completion_tokens"] += completion or 0
            self._costs["cost"] = _plus(self._costs["cost"], call.get("cost"))

    def _collect(self, event: str, fields: Mapping[str, Any]) -> None:
        """Keep the ``llm.usage`` event of each request made for this strategy's question."""
        current = _calls.get()
        if event == "llm.usage" and current is not None and current[0] is self:
            current[1].append(dict(fields))


def _plus(total: float | None, more: float | None) -> float | None:
    if more is None:
        return total
    return (total or 0.0) + more


#: Build the LLM port from the ``llm`` config: the composition root's (``workers/cli.py``
#: hands ``workers.grid.connect_llm``, the adapter without the fleet's limiter).
Connect = Callable[[LLMConfig], LLMPort]


def llm_strategy(
    record: Path,
    *,
    config: Path | None = None,
    sampling: int = 0,
    env: Mapping[str, str] | None = None,
    connect: Connect | None = None,
    host: HostLLM | None = None,
) -> LLMStrategy:
    """Return the LLM strategy over the record at ``record`` (created on the first answer).

    The LLM is ``host``'s when given (``config`` and ``env`` are then not read); otherwise
    ``config``'s ``llm`` (None: $CRYPTO_AI_CONFIG or ./config.yaml; ``env`` is the
    environment it reads, ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL`` among it, None: the
    process's), built by ``connect``. No LLM configured: only recorded answers, the rules
    otherwise. Raises ConfigError for a config that does not validate, RecordError for a
    bad record, ValueError for an LLM configured with nothing to ``connect`` it.
    """
    from core.config_loader import load_config

    llm = host.config if host is not None else load_config(config, env).llm
    run = host.run if host is not None else None
    store = Record(record)
    len(store)  # a bad record stops the run before its first question
    port = host.port if host is not None else None
    if not llm.configured or (host is not None and port is None):
        return LLMStrategy(store, None, sampling=sampling, run=run)
    if port is None:
        if connect is None:
            raise ValueError(
                "an LLM is configured but this command cannot connect to it (the replay's "
                "package imports no network client): run crypto-ai backtest, or replay a "
                "record without an LLM configured"
            )
        port = connect(llm)
    priced = llm.price_per_1k_tokens is not None
    return LLMStrategy(store, port, sampling=sampling, model=llm.model, priced=priced, run=run)
