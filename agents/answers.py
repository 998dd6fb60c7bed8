"""What the LLM must answer, and the checks of an answer against the data it was shown.

Parsing checks the schema: every number has bounds (confidences in [0, 1], prices positive
and finite, scores in [-1, 1]), texts and lists are bounded, and a thesis or a rationale
must be prose (``"]["`` is not). A model may ignore the bounds its grammar was given, so
they are checked again here, after parsing. The data checks go further, with the features
the question was asked on: every evidence item quotes a number the data holds, a case's
invalidation lies on its side of the price, and a trade's exits lie on their sides of the
entry at a sane distance in ATRs. Each check returns one line naming the field, the value
and the bound (None when the answer passes); ``agents/llm.py`` raises it as an
``LLMCheckError``, so the ladder falls to the cache or the rules and the report says why.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agents.types import Evidence, Features, Target

#: A price in an answer: positive and finite (the stop of -1 a small model wrote is not one).
Price = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]

#: How far a trade's stop may sit from the entry, in ATRs of the primary timeframe. Below a
#: quarter of an average candle's range the stop is hit by the noise inside one candle; past
#: 6 ATR a position the desk sized for a 2-ATR stop (``agents.strategy.size_for``) would lose
#: three times the risk it was sized for.
STOP_ATR = (0.25, 6.0)
#: How far a trade's take-profit may sit from the entry, in ATRs. Below a quarter ATR the
#: spread and fees eat the gain; past 12 ATR the target is out of reach within a plan's
#: horizon of hours (the rules aim at 3 ATR).
TAKE_PROFIT_ATR = (0.25, 12.0)
#: The farthest a case's invalidation may lie from the last price, in ATRs (the rules: 2).
INVALIDATION_ATR = 10.0
#: An evidence value matches its feature within this fraction of the feature's value: an LLM
#: rounds what it quotes to two or three significant figures (0.00125 -> 0.0013 is 4% off).
EVIDENCE_RELATIVE = 0.05
#: The absolute slack per feature, for values near zero that an LLM rounds to a fixed number
#: of decimals (RSI 55.04 -> 55, an imbalance of 0.004 -> 0.0). Features priced in the quote
#: currency (close, ATR, MACD, bands) get ``EVIDENCE_PRICE_FRACTION`` of the close instead.
EVIDENCE_ABSOLUTE = {
    "rsi": 0.5,
    "book_imbalance": 0.01,
    "volume_z": 0.05,
    "trend": 1e-5,
    "spread": 1e-5,
}
EVIDENCE_PRICE_FRACTION = 1e-4
#: The names an answer may give a number besides a feature's own (``Features`` fields, last).
EVIDENCE_ALIASES = {
    "price": "last",
    "last_price": "last",
    "macd_histogram": "macd_hist",
    "atr14": "atr",
    "rsi14": "rsi",
}
THESIS_CHARS = 1000
MAX_EVIDENCE = 12
#: A text is prose when it holds a word of this many letters and letters are at least
#: ``PROSE_LETTERS`` of its visible characters.
PROSE_WORD = 3
PROSE_LETTERS = 0.5
_WORD = re.compile(rf"[^\W\d_]{{{PROSE_WORD},}}")


def _quoted(text: str, chars: int = 40) -> str:
    return repr(text if len(text) <= chars else text[: chars - 3] + "...")


def prose_problem(field: str, text: str) -> str | None:
    """Return why ``text`` is not prose (empty, no word, mostly symbols), or None."""
    visible = "".join(text.split())
    if not visible:
        return f"{field} is empty"
    if not _WORD.search(text):
        return f"{field} {_quoted(text)} has no word of {PROSE_WORD} letters"
    share = sum(c.isalpha() for c in visible) / len(visible)
    if share < PROSE_LETTERS:
        return f"{field} {_quoted(text)} is {share:.0%} letters (at least {PROSE_LETTERS:.0%})"
    return None


def _prose(field: str, text: str) -> str:
    problem = prose_problem(field, text)
    if problem:
        raise ValueError(problem)
    return text


class CaseAnswer(BaseModel):
    """What the LLM must answer for a long or short case."""

    model_config = ConfigDict(extra="forbid")
    thesis: str = Field(max_length=THESIS_CHARS)
    evidence: list[Evidence] = Field(max_length=MAX_EVIDENCE)
    confidence: float = Field(ge=0.0, le=1.0)
    invalidation: Price | None

    @field_validator("thesis")
    @classmethod
    def _thesis_is_prose(cls, thesis: str) -> str:
        return _prose("thesis", thesis)

    @field_validator("evidence")
    @classmethod
    def _evidence_is_finite(cls, evidence: list[Evidence]) -> list[Evidence]:
        for item in evidence:
            if not math.isfinite(item.value):
                raise ValueError(f"evidence {item.name} = {item.value} is not a finite number")
        return evidence


class PlanAnswer(BaseModel):
    """What the LLM must answer as the strategist (the desk sizes the trade)."""

    model_config = ConfigDict(extra="forbid")
    action: Literal["buy", "sell", "hold"]
    #: What to do with the position shown (None: the rules choose, ``agents.strategy.aim``).
    target: Target | None = None
    confidence: float = Field(ge=0.0, le=1.0)
    stop_loss: Price | None
    take_profit: Price | None
    horizon: str = Field(max_length=40)
    rationale: str = Field(max_length=THESIS_CHARS)

    @field_validator("rationale")
    @classmethod
    def _rationale_is_prose(cls, rationale: str) -> str:
        return _prose("rationale", rationale)


def quoted_numbers(features: Features, last: float) -> dict[str, float | None]:
    """Return the numbers a data message shows, by the name evidence may quote them with."""
    numbers: dict[str, float | None] = {
        name: value for name, value in features.model_dump().items() if name != "timeframe"
    }
    return numbers | {"last": last}


def _tolerance(name: str, actual: float, close: float) -> float:
    floor = EVIDENCE_ABSOLUTE.get(name, EVIDENCE_PRICE_FRACTION * abs(close))
    return max(EVIDENCE_RELATIVE * abs(actual), floor)


def evidence_problem(evidence: Sequence[Evidence], features: Features, last: float) -> str | None:
    """Return the first evidence item whose value is not the data's number it names, or None."""
    numbers = quoted_numbers(features, last)
    for item in evidence:
        key = re.sub(r"[\s\-]+", "_", item.name.strip().lower())
        key = EVIDENCE_ALIASES.get(key, key)
        if key not in numbers:
            return (
                f"evidence {_quoted(item.name)} = {item.value:.6g} names no number in the data "
                "(a feature's name or last)"
            )
        actual = numbers[key]
        if actual is None:
            return f"evidence {key} = {item.value:.6g} quotes a feature the data has no value for"
        slack = _tolerance(key, actual, features.close)
        if abs(item.value - actual) > slack:
            return (
                f"evidence {key} = {item.value:.6g} is not the data's {actual:.6g} "
                f"(tolerance {slack:.3g})"
            )
    return None


def invalidation_problem(
    side: Literal["long", "short"], invalidation: float | None, last: float, atr: float | None
) -> str | None:
    """Return why a case's invalidation is on the wrong side of, or too far from, the price."""
    if invalidation is None:
        return None
    wrong = invalidation >= last if side == "long" else invalidation <= last
    if wrong:
        where = "below" if side == "long" else "above"
        return (
            f"invalidation {invalidation:.8g} of the {side} case is not {where} the last {last:.8g}"
        )
    if atr and abs(invalidation - last) / atr > INVALIDATION_ATR:
        away = abs(invalidation - last) / atr
        return (
            f"invalidation {invalidation:.8g} is {away:.3g} ATR from the last {last:.8g} "
            f"(at most {INVALIDATION_ATR:g} ATR)"
        )
    return None


def _exit_problem(
    field: str, price: float | None, action: str, entry: float, atr: float | None
) -> str | None:
    stop = field == "stop_loss"
    below = stop == (action == "buy")  # a buy's stop and a sell's target lie below the entry
    where = "below" if below else "above"
    if price is None:
        return f"a {action} needs a {field} (got none)"
    if (price >= entry) if below else (price <= entry):
        return f"{field} {price:.8g} of a {action} is not {where} the entry {entry:.8g}"
    if not atr:
        return None
    low, high = STOP_ATR if stop else TAKE_PROFIT_ATR
    away = abs(price - entry) / atr
    if not low <= away <= high:
        return (
            f"{field} {price:.8g} of a {action} is {away:.3g} ATR {where} the entry "
            f"{entry:.8g} (ATR {atr:.6g}; allowed {low:g} to {high:g} ATR)"
        )
    return None


#: Targets whose order opens nothing, so their answer's exits are not used (spot: a reverse
#: is a close).
EXITLESS_TARGETS = ("hold", "reduce", "close", "reverse")


def target_problem(answer: PlanAnswer, allowed: Sequence[str], held: str) -> str | None:
    """Return why the answer's target is not one the position allows, or None.

    ``allowed`` comes from ``agents.strategy.allowed_targets``; ``held`` names the position.
    An answer without a target passes: the rules choose it.
    """
    if answer.target is None or answer.target in allowed:
        return None
    return (
        f"target {answer.target} of a {answer.action} is not allowed on {held} "
        f"(allowed: {', '.join(allowed)})"
    )


def exits_problem(answer: PlanAnswer, entry: float, atr: float | None) -> str | None:
    """Return why a buy's or sell's exits are missing, on the wrong side, or too far, or None.

    A buy's stop lies below the entry and its take-profit above, each within its ATR band
    (``STOP_ATR``, ``TAKE_PROFIT_ATR``); a sell's mirror them. Without an ATR only the sides
    are checked. A hold has no exits to check, and neither has a target that only holds,
    reduces or closes the position (its exits are the position's).
    """
    if answer.action == "hold" or answer.target in EXITLESS_TARGETS:
        return None
    return _exit_problem("stop_loss", answer.stop_loss, answer.action, entry, atr) or (
        _exit_problem("take_profit", answer.take_profit, answer.action, entry, atr)
    )
