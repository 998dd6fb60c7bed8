"""The LLM rung of the ladder: LLM -> cache -> rules -> abstain, over one injected port.

The port (``LLMPort``) is any object with ``complete(schema, system, user)`` returning an
instance of ``schema``; the OpenAI-compatible adapter lives in ``llm/`` (langchain and openai
stay out of the agents) and translates the vendor's exceptions into the ``LLMError`` family.
Whatever keeps the LLM rung from answering (``LLM_FAILURES``: the fleet's budget or a
cooldown, a timeout, the provider unreachable or erroring, an answer cut at the length limit
or off the schema) falls to the next rung, and the output records which rung answered and,
below the LLM, why in one line. A bug in our own code (a TypeError) is not an LLM failure
and raises. Whatever the LLM says, the risk guard checks the order afterwards.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, Generic, Literal, NamedTuple, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agents.types import AnalystReport, Evidence, Features, NewsItem, Rung, TradePlan
from core.errors import BackOffError, CryptoAIError, RateLimitedError, RetryableError

log = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)

#: The longest ``fallback_reason`` kept: one line a person reads, not a traceback.
REASON_CHARS = 300
#: The newest trustworthy headlines one prompt shows the LLM: enough to read the news's
#: drift, and a bound on the prompt's size that config check's budget floor relies on
#: (core/config.py, ``LARGEST_CALL_CHARS``). The rules weigh every headline.
MAX_HEADLINES = 20


class LLMError(CryptoAIError):
    """The LLM did not give a usable answer (error, timeout, 429, off the schema)."""

    #: How a report's ``fallback_reason`` names this kind of failure.
    kind = "llm failed"


class LLMBudgetError(LLMError):
    """The fleet's LLM budget (tokens or requests per minute, a cooldown) did not admit the call."""

    kind = "llm budget exhausted"


class LLMThrottledError(LLMError):
    """The LLM provider answered 429; the fleet cools down."""

    kind = "llm provider throttled"


class LLMTimeoutError(LLMError):
    """The LLM did not answer within ``llm.timeout``."""

    kind = "llm timed out"


class LLMUnavailableError(LLMError):
    """The LLM provider could not be reached or answered an error status."""

    kind = "llm unavailable"


class LLMAnswerError(LLMError):
    """The LLM's answer does not parse, does not fit the schema, or was refused."""

    kind = "llm answer off schema"


class LLMLengthError(LLMAnswerError):
    """The LLM's answer was cut at the token limit (finish_reason "length")."""

    kind = "llm answer cut at the length limit"


#: Everything that means "the LLM rung cannot answer": the port's errors, the limiter saying
#: no (a port that does not translate it), a cooldown or open breaker, an answer that does not
#: parse or fit (also our own checks of it, such as a plan's exits), a timeout. Anything
#: else (TypeError, KeyError, a StopError, a ConfigError) is not the LLM's failure and raises.
LLM_FAILURES: tuple[type[Exception], ...] = (
    LLMError,
    BackOffError,
    RetryableError,
    ValidationError,
    json.JSONDecodeError,
    TimeoutError,
)


class LLMPort(Protocol):
    """Ask a model for an answer of a given schema."""

    async def complete(self, schema: type[T], system: str, user: str) -> T:
        """Return the model's answer as ``schema``; raise LLMError when there is none."""
        ...


class CaseAnswer(BaseModel):
    """What the LLM must answer for a long or short case."""

    model_config = ConfigDict(extra="forbid")
    thesis: str
    evidence: list[Evidence]
    confidence: float = Field(ge=0.0, le=1.0)
    invalidation: float | None


class PlanAnswer(BaseModel):
    """What the LLM must answer as the strategist (the desk sizes the trade)."""

    model_config = ConfigDict(extra="forbid")
    action: Literal["buy", "sell", "hold"]
    confidence: float = Field(ge=0.0, le=1.0)
    stop_loss: float | None
    take_profit: float | None
    horizon: str
    rationale: str


@functools.cache
def _prompt_text(name: str) -> str:
    return resources.files("agents").joinpath("prompts", f"{name}.txt").read_text()


def prompt(name: str, **values: Any) -> str:
    """Return a prompt file from ``agents/prompts`` with the values filled in."""
    return _prompt_text(name).format(**values)


def newest_trusted(news: list[NewsItem]) -> list[NewsItem]:
    """Return the ``MAX_HEADLINES`` newest items that are not suspicious, newest first."""
    trusted = [n for n in news if not n.suspicious]
    return sorted(trusted, key=lambda n: n.published, reverse=True)[:MAX_HEADLINES]


def data_message(features: Features, news: list[NewsItem], **extra: Any) -> str:
    """Return the user message: features and the newest quoted headlines as JSON data."""
    headlines = [
        {"published": n.published.isoformat(), "title": n.title, "sentiment": n.sentiment}
        for n in newest_trusted(news)
    ]
    payload = {"features": features.model_dump(), "headlines": headlines, **extra}
    return "DATA (JSON):\n" + json.dumps(payload, default=str)


def case_messages(
    side: Literal["long", "short"],
    symbol: str,
    features: Features,
    news: list[NewsItem],
    last: float,
) -> tuple[str, str]:
    """Return the (system, user) messages asking for the long or short case."""
    system = prompt("case", side=side, symbol=symbol)
    return system, data_message(features, news, symbol=symbol, last=last)


def plan_messages(
    symbol: str, features: Features, long: AnalystReport, short: AnalystReport
) -> tuple[str, str]:
    """Return the (system, user) messages asking the strategist; entry is the last close."""
    system = prompt("plan", symbol=symbol, entry=features.close)
    # the rung is evidence of how much a case is worth; why the LLM failed is not
    hidden = {"fallback_reason"}
    user = data_message(
        features,
        [],
        long=long.model_dump(mode="json", exclude=hidden),
        short=short.model_dump(mode="json", exclude=hidden),
    )
    return system, user


def brief(exc: BaseException) -> str:
    """Return an exception's message on one line (a validation error as its first problems)."""
    if isinstance(exc, ValidationError):
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or exc.title}: {e['msg']}"
            for e in exc.errors()[:3]
        ]
        more = f" (+{exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
        text = f"{exc.title}: {'; '.join(problems)}{more}"
    else:
        text = str(exc)
    return " ".join(text.split())


def _kind(exc: BaseException) -> str:
    if isinstance(exc, LLMError):
        return exc.kind
    if isinstance(exc, RateLimitedError):
        return LLMBudgetError.kind
    if isinstance(exc, BackOffError):
        return "llm backing off"
    if isinstance(exc, ValidationError | json.JSONDecodeError):
        return LLMAnswerError.kind
    if isinstance(exc, TimeoutError):
        return LLMTimeoutError.kind
    return LLMUnavailableError.kind  # a RetryableError: the provider is not usable now


def fallback_reason(exc: BaseException) -> str:
    """Return one line saying why the LLM rung did not answer: kind, error class, message.

    An LLMError translated from a vendor's or the limiter's exception names that original
    class (``RateLimitedError``, ``LengthFinishReasonError``), with the translated message.
    """
    origin = exc.__cause__ if isinstance(exc, LLMError) and exc.__cause__ is not None else exc
    message = brief(exc)
    line = f"{_kind(exc)}: {type(origin).__name__}" + (f": {message}" if message else "")
    return line if len(line) <= REASON_CHARS else line[: REASON_CHARS - 3] + "..."


class Climbed(NamedTuple, Generic[T]):
    """The answer of the ladder, the rung that gave it, and why the LLM did not (or None)."""

    answer: T
    rung: Rung
    reason: str | None


async def climb(
    ask: Callable[[], Awaitable[T]],
    cached: Callable[[], T | None],
    rules: Callable[[], T],
    remember: Callable[[T], None],
    *,
    what: str = "the LLM rung",
) -> Climbed[T]:
    """Return the first answer of LLM -> cache -> rules, the rung that gave it, and why not LLM.

    ``what`` names the call in the warning logged when the LLM does not answer.
    """
    try:
        answer = await ask()
    except LLM_FAILURES as exc:
        reason = fallback_reason(exc)
        log.debug("%s: the LLM failed", what, exc_info=exc)
    else:
        remember(answer)
        return Climbed(answer, Rung.LLM, None)
    previous = cached()
    climbed = (
        Climbed(previous, Rung.CACHE, reason)
        if previous is not None
        else Climbed(rules(), Rung.RULES, reason)
    )
    log.warning("%s: the LLM did not answer (%s); the %s answered", what, reason, climbed.rung)
    return climbed


def case_from_answer(
    side: Literal["long", "short"], answer: CaseAnswer, rung: Rung
) -> AnalystReport:
    """Return the report for an LLM (or cached LLM) answer."""
    return AnalystReport(
        side=side,
        thesis=answer.thesis,
        evidence=answer.evidence,
        confidence=answer.confidence,
        invalidation=answer.invalidation,
        rung=rung,
    )


def plan_from_answer(
    symbol: str, entry: float, size: float, answer: PlanAnswer, rung: Rung
) -> TradePlan:
    """Return the plan for an LLM answer; ValidationError if its exits are inconsistent."""
    if answer.action == "hold":
        return TradePlan(
            action="hold",
            symbol=symbol,
            confidence=answer.confidence,
            rationale=answer.rationale,
            rung=rung,
        )
    return TradePlan(
        action=answer.action,
        symbol=symbol,
        size=size,
        entry=entry,
        stop_loss=answer.stop_loss,
        take_profit=answer.take_profit,
        horizon=answer.horizon,
        confidence=answer.confidence,
        rationale=answer.rationale,
        rung=rung,
    )


class HeadlineScores(BaseModel):
    """The LLM's sentiment for each headline, in order: -1 (bearish) to 1 (bullish)."""

    model_config = ConfigDict(extra="forbid")
    scores: list[float]


async def score_headlines(llm: LLMPort, symbol: str, items: list[NewsItem]) -> list[NewsItem]:
    """Return the items with LLM sentiment; suspicious items keep 0 and are not shown to it.

    Only the ``MAX_HEADLINES`` newest are shown; older ones keep the lexicon's score. Raises
    LLMError (or ValidationError) when the answer does not fit: the caller keeps the
    lexicon's scores then.
    """
    shown = newest_trusted(items)
    if not shown:
        return items
    system = prompt("sentiment", symbol=symbol, count=len(shown))
    user = "HEADLINES (JSON, data only):\n" + json.dumps([i.title for i in shown])
    answer = await llm.complete(HeadlineScores, system, user)
    if len(answer.scores) != len(shown) or any(not -1 <= s <= 1 for s in answer.scores):
        raise LLMAnswerError(f"expected {len(shown)} scores in [-1, 1], got {answer.scores}")
    scored = dict(zip((i.id for i in shown), answer.scores, strict=True))
    return [
        i.model_copy(update={"sentiment": scored[i.id]}) if i.id in scored else i for i in items
    ]
