"""Every LLM answer is checked against its schema's bounds and the data it was asked on.

A model may ignore the bounds its grammar was given (confidences of 2 and 10 came back from
a small model), quote numbers the data does not hold, or put a stop on the wrong side of
the entry. Each check rejects the answer with one line naming the field, the value and the
bound; the ladder then falls to the cache or the rules with that line as its reason, and an
answer that failed is neither remembered nor sized into an order.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from pydantic import ValidationError

from agents.analysts import analyse
from agents.answers import STOP_ATR, TAKE_PROFIT_ATR, prose_problem
from agents.llm import (
    CaseAnswer,
    HeadlineScores,
    LLMCheckError,
    PlanAnswer,
    ask_case,
    ask_plan,
    case_from_answer,
    climb,
    fallback_reason,
    plan_from_answer,
)
from agents.strategy import decide
from agents.types import AnalystReport, Rung, TradePlan
from core.config import RiskLimits
from tests.unit.test_llm_ladder import FEATURES, GOOD, FakePort

#: FEATURES: close 100, ATR 2, rsi 55, trend 0.001
CASE = {
    "thesis": "trend and RSI support the long case",
    "confidence": 0.7,
    "invalidation": 96.0,
    "evidence": [
        {"name": "rsi", "value": 55.0, "meaning": "neutral momentum"},
        {"name": "trend", "value": 0.001, "meaning": "slope"},
    ],
}
PLAN = {
    "action": "buy",
    "confidence": 0.6,
    "stop_loss": 96.0,
    "take_profit": 106.0,
    "horizon": "4h",
    "rationale": "the long case is stronger",
}


def rejected(schema: type[Any], answer: dict[str, Any]) -> str:
    """Return the ladder's reason for an answer that does not parse into ``schema``."""
    with pytest.raises(ValidationError) as caught:
        schema.model_validate(answer)
    return fallback_reason(caught.value)


@pytest.mark.parametrize(
    ("schema", "answer", "expected"),
    [
        (CaseAnswer, CASE | {"confidence": 2}, "confidence: Input should be less than or equal to 1 (got 2)"),
        (CaseAnswer, CASE | {"confidence": 10.0}, "confidence: Input should be less than or equal to 1 (got 10.0)"),
        (CaseAnswer, CASE | {"confidence": -0.5}, "confidence: Input should be greater than or equal to 0 (got -0.5)"),
        (CaseAnswer, CASE | {"invalidation": -1}, "invalidation: Input should be greater than 0 (got -1)"),
        (PlanAnswer, PLAN | {"confidence": 2}, "confidence: Input should be less than or equal to 1 (got 2)"),
        (PlanAnswer, PLAN | {"stop_loss": -1}, "stop_loss: Input should be greater than 0 (got -1)"),
        (PlanAnswer, PLAN | {"take_profit": 0}, "take_profit: Input should be greater than 0 (got 0)"),
        (HeadlineScores, {"scores": [0.2, 1.5]}, "scores.1: Input should be less than or equal to 1 (got 1.5)"),
    ],
)  # fmt: skip
def test_a_number_outside_its_bound_is_rejected_naming_field_value_and_bound(
    schema: type[Any], answer: dict[str, Any], expected: str
) -> None:
    reason = rejected(schema, answer)
    assert reason.startswith("llm answer off schema: ValidationError: ")
    assert expected in reason, reason


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_an_evidence_value_that_is_no_number_is_rejected(value: float) -> None:
    evidence = [{"name": "rsi", "value": value, "meaning": "momentum"}]
    reason = rejected(CaseAnswer, CASE | {"evidence": evidence})
    assert "evidence rsi =" in reason and "is not a finite number" in reason


@pytest.mark.parametrize(
    ("thesis", "expected"),
    [
        ("][", "thesis '][' has no word of 3 letters"),
        ("", "thesis is empty"),
        ("   \n ", "thesis is empty"),
        ("12345 0.67 1.00", "thesis '12345 0.67 1.00' has no word of 3 letters"),
        (
            '{"}]: [[[ ]]] !!!! buy ##',
            "thesis '{\"}]: [[[ ]]] !!!! buy ##' is 15% letters (at least 50%)",
        ),
    ],
)
def test_a_thesis_that_is_no_prose_is_rejected(thesis: str, expected: str) -> None:
    reason = rejected(CaseAnswer, CASE | {"thesis": thesis})
    assert f"thesis: Value error, {expected}" in reason, reason


def test_prose_passes_in_any_script() -> None:
    for text in ("rules", "momentum holds", "Биткоин растёт на притоке", "比特币上涨"):
        assert prose_problem("thesis", text) is None, text
    assert "rationale" in rejected(PlanAnswer, PLAN | {"rationale": "]["})


@pytest.mark.parametrize(
    ("evidence", "expected"),
    [
        ({"name": "rsi", "value": 80.0}, "long case: evidence rsi = 80 is not the data's 55 (tolerance 2.75)"),
        ({"name": "atr", "value": 20.0}, "long case: evidence atr = 20 is not the data's 2 (tolerance 0.1)"),
        ({"name": "moon", "value": 1.0}, "long case: evidence 'moon' = 1 names no number in the data"),
        ({"name": "last", "value": 37600.0}, "long case: evidence last = 37600 is not the data's 100"),
    ],
)  # fmt: skip
def test_evidence_that_does_not_match_its_feature_is_rejected(
    evidence: dict[str, Any], expected: str
) -> None:
    answer = CaseAnswer.model_validate(CASE | {"evidence": [evidence | {"meaning": "quoted"}]})
    with pytest.raises(LLMCheckError) as caught:
        case_from_answer("long", answer, Rung.LLM, features=FEATURES, last=100.0)
    assert expected in str(caught.value)
    assert fallback_reason(caught.value).startswith("llm answer rejected: LLMCheckError: ")


def test_evidence_quoting_a_feature_without_a_value_is_rejected() -> None:
    answer = CaseAnswer.model_validate(CASE)
    with pytest.raises(LLMCheckError, match="rsi = 55 quotes a feature the data has no value"):
        case_from_answer(
            "long", answer, Rung.LLM, features=FEATURES.model_copy(update={"rsi": None})
        )


def test_evidence_rounded_as_a_model_writes_it_is_accepted() -> None:
    quoted = [
        {"name": "RSI", "value": 55.3, "meaning": "a"},
        {"name": "trend", "value": 0.00102, "meaning": "b"},
        {"name": "macd histogram", "value": 0.05, "meaning": "c"},
        {"name": "price", "value": 100.004, "meaning": "d"},
        {"name": "book_imbalance", "value": 0.1, "meaning": "e"},
    ]
    answer = CaseAnswer.model_validate(CASE | {"evidence": quoted})
    report = case_from_answer("long", answer, Rung.LLM, features=FEATURES, last=100.0)
    assert report.rung is Rung.LLM and len(report.evidence) == 5


def test_an_invalidation_on_the_wrong_side_of_the_price_is_rejected() -> None:
    answer = CaseAnswer.model_validate(CASE | {"invalidation": 104.0})
    with pytest.raises(LLMCheckError, match="invalidation 104 of the long case is not below"):
        case_from_answer("long", answer, Rung.LLM, features=FEATURES, last=100.0)
    short = case_from_answer("short", answer, Rung.LLM, features=FEATURES, last=100.0)
    assert short.invalidation == 104.0


def plan(answer: dict[str, Any], atr: float | None = 2.0) -> TradePlan:
    return plan_from_answer(
        "BTC/USDT", 100.0, 0.1, PlanAnswer.model_validate(PLAN | answer), Rung.LLM, atr=atr
    )


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"stop_loss": 101.0}, "plan: stop_loss 101 of a buy is not below the entry 100"),
        ({"take_profit": 99.0}, "plan: take_profit 99 of a buy is not above the entry 100"),
        ({"action": "sell"}, "plan: stop_loss 96 of a sell is not above the entry 100"),
        ({"action": "sell", "stop_loss": 104.0}, "plan: take_profit 106 of a sell is not below the entry 100"),
        ({"stop_loss": None}, "plan: a buy needs a stop_loss (got none)"),
        ({"take_profit": None}, "plan: a buy needs a take_profit (got none)"),
    ],
)  # fmt: skip
def test_an_exit_on_the_wrong_side_of_the_entry_is_rejected(
    answer: dict[str, Any], expected: str
) -> None:
    with pytest.raises(LLMCheckError) as caught:
        plan(answer)
    assert str(caught.value) == expected
    with pytest.raises(LLMCheckError):
        plan(answer, atr=None)  # the sides are checked even without an ATR


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"stop_loss": 70.0}, "plan: stop_loss 70 of a buy is 15 ATR below the entry 100 (ATR 2; allowed 0.25 to 6 ATR)"),
        ({"stop_loss": 99.9}, "plan: stop_loss 99.9 of a buy is 0.05 ATR below the entry 100 (ATR 2; allowed 0.25 to 6 ATR)"),
        ({"take_profit": 150.0}, "plan: take_profit 150 of a buy is 25 ATR above the entry 100 (ATR 2; allowed 0.25 to 12 ATR)"),
        ({"action": "sell", "stop_loss": 130.0, "take_profit": 95.0}, "plan: stop_loss 130 of a sell is 15 ATR above the entry 100"),
    ],
)  # fmt: skip
def test_an_exit_absurdly_far_in_atr_is_rejected(answer: dict[str, Any], expected: str) -> None:
    with pytest.raises(LLMCheckError) as caught:
        plan(answer)
    assert str(caught.value).startswith(expected)


def test_exits_inside_their_atr_bands_make_a_plan_and_a_hold_needs_none() -> None:
    low, high = STOP_ATR
    for stop in (100 - low * 2, 100 - high * 2):
        assert (
            plan({"stop_loss": stop, "take_profit": 100 + TAKE_PROFIT_ATR[1] * 2}).rung is Rung.LLM
        )
    sell = plan({"action": "sell", "stop_loss": 104.0, "take_profit": 95.0})
    assert (sell.stop_loss, sell.take_profit) == (104.0, 95.0)
    assert plan({"action": "hold", "stop_loss": None, "take_profit": None}).action == "hold"


LIMITS = RiskLimits(max_position_per_symbol=1000, max_notional_per_order=100)


def test_a_refuted_case_is_not_remembered_and_the_rules_answer_with_the_reason() -> None:
    port = FakePort(answer=CASE | {"evidence": [{"name": "rsi", "value": 80, "meaning": "x"}]})
    remembered: list[AnalystReport] = []
    rules = analyse("long", FEATURES)

    async def run() -> tuple[AnalystReport, Rung, str | None]:
        return await climb(
            lambda: ask_case(port, "long", "BTC/USDT", features=FEATURES, news=[], last=100.0),
            lambda: None,
            lambda: rules,
            remembered.append,
        )

    report, rung, reason = asyncio.run(run())
    assert rung is Rung.RULES and report is rules and remembered == []
    assert reason == (
        "llm answer rejected: LLMCheckError: long case: evidence rsi = 80 is not the data's 55 "
        "(tolerance 2.75)"
    )
    good = FakePort(answer=CASE)
    asyncio.run(
        climb(
            lambda: ask_case(good, "long", "BTC/USDT", features=FEATURES, news=[], last=100.0),
            lambda: None,
            lambda: rules,
            remembered.append,
        )
    )
    assert [r.rung for r in remembered] == [Rung.LLM], "a checked answer is remembered"


def test_a_plan_with_a_bad_stop_is_never_sized_and_the_rules_decide() -> None:
    long, short = analyse("long", FEATURES, 0.9, 3), analyse("short", FEATURES, -0.9, 3)
    rules = decide("BTC/USDT", long, short, FEATURES, LIMITS)
    port = FakePort(answer=PLAN | {"confidence": 1.0, "stop_loss": 40.0})

    async def run() -> tuple[TradePlan, Rung, str | None]:
        return await climb(
            lambda: ask_plan(
                port, "BTC/USDT", features=FEATURES, long=long, short=short, limits=LIMITS
            ),
            lambda: None,
            lambda: rules,
            lambda plan: None,
        )

    chosen, rung, reason = asyncio.run(run())
    assert rung is Rung.RULES and chosen is rules and chosen.stop_loss != 40.0
    assert reason is not None and "stop_loss 40 of a buy is 30 ATR below the entry 100" in reason


def test_a_cached_answer_that_no_longer_parses_falls_to_the_rules() -> None:
    """An answer cached before a check existed is no answer: the rules take over."""
    rules = CaseAnswer.model_validate(GOOD)

    async def broken() -> CaseAnswer:
        raise LLMCheckError("long case: evidence rsi = 80 is not the data's 55")

    got, rung, reason = asyncio.run(
        climb(
            broken,
            lambda: CaseAnswer.model_validate(CASE | {"thesis": "]["}),
            lambda: rules,
            lambda answer: None,
        )
    )
    assert rung is Rung.RULES and got is rules and reason and "rsi = 80" in reason
