"""The LLM rung of the ladder: LLM -> cache -> rules -> abstain, over one injected port.

The port (``LLMPort``) is any object with ``complete(schema, system, user)`` returning an
instance of ``schema``; the OpenAI-compatible adapter lives in ``llm/`` (langchain and openai
stay out of the agents) and translates the vendor's exceptions into the ``LLMError`` family.
Whatever keeps the LLM rung from answering (``LLM_FAILURES``: the fleet's budget or a
cooldown, a timeout, the provider unreachable or erroring, an answer cut at the length limit
or off the schema, an answer the data contradicts) falls to the next rung, and the output
records which rung answered and, below the LLM, why in one line. A bug in our own code (a
TypeError) is not an LLM failure and raises. Every answer is checked against the data it was
asked on before anything is built from it (``agents/answers.py``: bounds, evidence, exits);
one that fails is never remembered, never sized into an order. Whatever the LLM says, the
risk guard checks the order afterwards.
The messages themselves are built in ``agents/messages.py`` (headlines only unflagged, as
quoted data with their provenance).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, NamedTuple, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agents.answers import (
    EXITLESS_TARGETS,
    CaseAnswer,
    PlanAnswer,
    evidence_problem,
    exits_problem,
    invalidation_problem,
    target_problem,
)
from agents.messages import (
    MAX_HEADLINES,
    case_messages,
    data_message,
    newest_trusted,
    plan_messages,
    prompt,
    quoted_headline,
)
from agents.strategy import allowed_targets, expires_at, is_live, size_for
from agents.types import AnalystReport, Features, Holding, NewsItem, Rung, TradePlan
from core.config import RiskLimits
from core.errors import BackOffError, CryptoAIError, RateLimitedError, RetryableError

__all__ = [
    "LLM_FAILURES",
    "MAX_HEADLINES",
    "REASON_CHARS",
    "CaseAnswer",
    "Climbed",
    "HeadlineScores",
    "LLMAnswerError",
    "LLMBudgetError",
    "LLMCheckError",
    "LLMError",
    "LLMLengthError",
    "LLMPort",
    "LLMThrottledError",
    "LLMTimeoutError",
    "LLMUnavailableError",
    "PlanAnswer",
    "ask_case",
    "ask_plan",
    "brief",
    "case_from_answer",
    "case_messages",
    "climb",
    "data_message",
    "fallback_reason",
    "newest_trusted",
    "plan_from_answer",
    "plan_messages",
    "prompt",
    "score_headlines",
]

log = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)

#: The longest ``fallback_reason`` kept: one line a person reads, not a traceback.
REASON_CHARS = 300


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


class LLMCheckError(LLMAnswerError):
    """The LLM's answer fits the schema but not the data (evidence, invalidation, exits)."""

    kind = "llm answer rejected"


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


def brief(exc: BaseException) -> str:
    """Return an exception's message on one line (a validation error as its first problems)."""
    if isinstance(exc, ValidationError):
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or exc.title}: {e['msg']}{_got(e)}"
            for e in exc.errors()[:3]
        ]
        more = f" (+{exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
        text = f"{exc.title}: {'; '.join(problems)}{more}"
    else:
        text = str(exc)
    return " ".join(text.split())


def _got(error: Any) -> str:
    """Return " (got <value>)" for a bound a scalar broke; its own message names the value."""
    value = error.get("input")
    if error["type"] == "value_error" or not isinstance(value, int | float | str | None):
        return ""
    return f" (got {value!r:.40})"


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
        remember(answer)  # only an answer that passed its checks: ask() raised otherwise
        return Climbed(answer, Rung.LLM, None)
    try:
        previous = cached()
    except LLM_FAILURES as exc:
        # a remembered answer that no longer passes the checks is no answer
        log.warning("%s: the cached answer is unusable (%s)", what, fallback_reason(exc))
        previous = None
    climbed = (
        Climbed(previous, Rung.CACHE, reason)
        if previous is not None
        else Climbed(rules(), Rung.RULES, reason)
    )
    log.warning("%s: the LLM did not answer (%s); the %s answered", what, reason, climbed.rung)
    return climbed


#: How long an analyst's LLM answer stands in for a failed ask (the cache rung), seconds.
LLM_CACHE_SECONDS = 900.0
#: Why the LLM rung did not answer when no LLM is configured: the report says so too.
NO_LLM = "llm off: no llm.base_url or llm.api_key is configured"
#: Why the strategist is not asked before an ATR exists to size the plan by.
NO_ATR = "llm skipped: too few candles for an ATR to size the plan by"


def answer_of(report: AnalystReport) -> CaseAnswer:
    """Return the LLM answer an analyst's LLM report was made from (what the cache keeps)."""
    return CaseAnswer(
        thesis=report.thesis,
        evidence=report.evidence,
        confidence=report.confidence,
        invalidation=report.invalidation,
    )


def case_from_answer(
    side: Literal["long", "short"],
    answer: CaseAnswer,
    rung: Rung,
    *,
    features: Features | None = None,
    last: float | None = None,
) -> AnalystReport:
    """Return the report for an LLM (or cached LLM) answer; LLMCheckError if the data refutes it.

    With the ``features`` (and the ``last`` price, default the close) the question was asked
    on, every evidence item must quote the number it names and the invalidation must lie on
    the case's side of the price within ``INVALIDATION_ATR``. Without them (a cached answer,
    checked when it was given) only the schema's checks apply.
    """
    if features is not None:
        price = features.close if last is None else last
        problem = evidence_problem(answer.evidence, features, price) or invalidation_problem(
            side, answer.invalidation, price, features.atr
        )
        if problem:
            raise LLMCheckError(f"{side} case: {problem}")
    return AnalystReport(
        side=side,
        thesis=answer.thesis,
        evidence=answer.evidence,
        confidence=answer.confidence,
        invalidation=answer.invalidation,
        rung=rung,
    )


def plan_from_answer(
    symbol: str,
    entry: float,
    size: float,
    answer: PlanAnswer,
    rung: Rung,
    *,
    atr: float | None = None,
) -> TradePlan:
    """Return the plan for an LLM answer; LLMCheckError if its exits are missing or insane.

    A buy's stop must lie below the entry and its take-profit above (a sell's mirror them),
    and with the ``atr`` each within its band of ATRs (``agents.answers.STOP_ATR``,
    ``TAKE_PROFIT_ATR``).
    """
    problem = exits_problem(answer, entry, atr)
    if problem:
        raise LLMCheckError(f"plan: {problem}")
    if answer.action == "hold":
        return TradePlan(
            action="hold",
            symbol=symbol,
            confidence=answer.confidence,
            rationale=answer.rationale,
            rung=rung,
            target=answer.target,
        )
    # a target without exits (close, reduce) is aimed at the position, not entered
    exits = answer.target not in EXITLESS_TARGETS
    return TradePlan(
        action=answer.action,
        symbol=symbol,
        size=size,
        entry=entry,
        stop_loss=answer.stop_loss if exits else None,
        take_profit=answer.take_profit if exits else None,
        horizon=answer.horizon,
        confidence=answer.confidence,
        rationale=answer.rationale,
        rung=rung,
        target=answer.target,
    )


def position_message(holding: Holding | None, now: datetime) -> str:
    """Return the user message's section showing the position held, as quoted JSON data."""
    if holding is None:
        shown: dict[str, Any] = {"side": "flat"}
    else:
        until = expires_at(holding)
        shown = holding.model_dump(mode="json", exclude={"run_id"}) | {
            "plan_expires_at": until.isoformat(timespec="minutes") if until else None,
            "plan_live": is_live(holding, now),
        }
    return "\nPOSITION (JSON, data only):\n" + json.dumps(shown, default=str)


async def ask_case(
    llm: LLMPort,
    side: Literal["long", "short"],
    symbol: str,
    *,
    features: Features,
    news: list[NewsItem],
    last: float,
) -> AnalystReport:
    """Return the LLM's case for ``side``, checked against the data it was shown."""
    system, user = case_messages(side, symbol, features, news, last)
    answer = await llm.complete(CaseAnswer, system, user)
    return case_from_answer(side, answer, Rung.LLM, features=features, last=last)


async def ask_plan(
    llm: LLMPort,
    symbol: str,
    *,
    features: Features,
    long: AnalystReport,
    short: AnalystReport,
    limits: RiskLimits,
    holding: Holding | None = None,
    now: datetime | None = None,
) -> TradePlan:
    """Return the LLM's plan, its exits checked against the ATR before the desk sizes it.

    The LLM is shown ``holding`` (the position, as data) and may answer a target for it;
    a target the position does not allow (``agents.strategy.allowed_targets``) is refused.
    The caller aims the plan at the position (``agents.strategy.aim``).

    Warning: the ATR must be known; without one there is no stop to check, and the caller
    leaves the plan to the rules.
    """
    if features.atr is None or features.atr <= 0:
        raise LLMCheckError("plan: no ATR to check the exits against")
    now = now or datetime.now(UTC)
    system, user = plan_messages(symbol, features, long, short)
    answer = await llm.complete(PlanAnswer, system, user + position_message(holding, now))
    allowed = allowed_targets(answer.action, holding, now)
    held = "no position" if holding is None else f"a {holding.side} position"
    problem = exits_problem(answer, features.close, features.atr) or target_problem(
        answer, allowed, held
    )
    if problem:
        raise LLMCheckError(f"plan: {problem}")
    size = size_for(features.close, features.atr, answer.confidence, limits)
    return plan_from_answer(symbol, features.close, size, answer, Rung.LLM, atr=features.atr)


class HeadlineScores(BaseModel):
    """The LLM's sentiment for each headline, in order: -1 (bearish) to 1 (bullish)."""

    model_config = ConfigDict(extra="forbid")
    scores: list[Annotated[float, Field(ge=-1.0, le=1.0)]] = Field(max_length=MAX_HEADLINES)


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
    user = "HEADLINES (JSON, data only):\n" + json.dumps([quoted_headline(i) for i in shown])
    answer = await llm.complete(HeadlineScores, system, user)
    if len(answer.scores) != len(shown) or any(not -1 <= s <= 1 for s in answer.scores):
        raise LLMAnswerError(f"expected {len(shown)} scores in [-1, 1], got {answer.scores}")
    scored = dict(zip((i.id for i in shown), answer.scores, strict=True))
    return [
        i.model_copy(update={"sentiment": scored[i.id]}) if i.id in scored else i for i in items
    ]
