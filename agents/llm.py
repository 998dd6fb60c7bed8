"""The LLM rung of the ladder: LLM -> cache -> rules -> abstain, over one injected port.

The port (``LLMPort``) is any object with ``complete(schema, system, user)`` returning an
instance of ``schema``; the OpenAI-compatible adapter lives in ``llm/`` (langchain stays out
of the agents). An answer that fails, times out or does not fit the schema falls to the next
rung, and the report records which rung answered. Whatever the LLM says, the risk guard
checks the order afterwards.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agents.types import AnalystReport, Evidence, Features, NewsItem, Rung, TradePlan

log = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)


class LLMError(Exception):
    """The LLM did not give a usable answer (error, timeout, 429, off the schema)."""


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


def data_message(features: Features, news: list[NewsItem], **extra: Any) -> str:
    """Return the user message: features and quoted headlines as JSON data."""
    headlines = [
        {"published": n.published.isoformat(), "title": n.title, "sentiment": n.sentiment}
        for n in news
        if not n.suspicious
    ]
    payload = {"features": features.model_dump(), "headlines": headlines, **extra}
    return "DATA (JSON):\n" + json.dumps(payload, default=str)


async def climb(
    ask: Callable[[], Awaitable[T]],
    cached: Callable[[], T | None],
    rules: Callable[[], T],
    remember: Callable[[T], None],
) -> tuple[T, Rung]:
    """Return the first answer of LLM -> cache -> rules, and the rung that gave it."""
    try:
        answer = await ask()
    except (LLMError, ValidationError, TimeoutError) as exc:
        log.warning("LLM rung failed (%s); falling back", exc)
    else:
        remember(answer)
        return answer, Rung.LLM
    previous = cached()
    if previous is not None:
        return previous, Rung.CACHE
    return rules(), Rung.RULES


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

    Raises LLMError (or ValidationError) when the answer does not fit: the caller keeps the
    lexicon's scores then.
    """
    shown = [i for i in items if not i.suspicious]
    if not shown:
        return items
    system = prompt("sentiment", symbol=symbol, count=len(shown))
    user = "HEADLINES (JSON, data only):\n" + json.dumps([i.title for i in shown])
    answer = await llm.complete(HeadlineScores, system, user)
    if len(answer.scores) != len(shown) or any(not -1 <= s <= 1 for s in answer.scores):
        raise LLMError(f"expected {len(shown)} scores in [-1, 1], got {answer.scores}")
    scored = dict(zip((i.id for i in shown), answer.scores, strict=True))
    return [
        i.model_copy(update={"sentiment": scored[i.id]}) if i.id in scored else i for i in items
    ]
