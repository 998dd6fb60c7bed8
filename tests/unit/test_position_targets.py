"""Position-aware decisions: a signal and the position held become one target and its order."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from agents.answers import PlanAnswer, exits_problem, target_problem
from agents.llm import LLMCheckError, ask_plan
from agents.strategy import REDUCE_FRACTION, aim, allowed_targets, horizon_seconds, is_live
from agents.types import AnalystReport, Features, Holding, Rung, TradePlan
from core.config import RiskLimits

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
LIMITS = RiskLimits(max_position_per_symbol=500.0, max_notional_per_order=100.0)


def buy(size: float = 0.5) -> TradePlan:
    return TradePlan(
        action="buy",
        symbol="SOL/USDT",
        size=size,
        entry=100.0,
        stop_loss=96.0,
        take_profit=106.0,
        rationale="edge +0.4",
        rung=Rung.RULES,
    )


def sell(size: float = 0.5) -> TradePlan:
    return TradePlan(
        action="sell",
        symbol="SOL/USDT",
        size=size,
        entry=100.0,
        stop_loss=104.0,
        take_profit=94.0,
        rationale="edge -0.4",
    )


def long(
    amount: float = 2.0, opened: timedelta = timedelta(hours=1), horizon: str = "4h"
) -> Holding:
    return Holding(
        side="long", amount=amount, entry=90.0, horizon=horizon, opened_at=NOW - opened, run_id="r1"
    )


def test_a_buy_with_no_position_opens_it_unchanged() -> None:
    plan = aim(buy(), None, now=NOW, limits=LIMITS)
    assert (plan.action, plan.target, plan.size, plan.stop_loss) == ("buy", "open", 0.5, 96.0)
    assert plan.signal == "buy" and plan.position is None


def test_a_sell_with_no_position_on_spot_holds_nothing_to_sell() -> None:
    plan = aim(sell(), None, now=NOW, limits=LIMITS)
    assert (plan.action, plan.target, plan.size) == ("hold", "hold", 0.0)
    assert "nothing to sell" in plan.rationale and plan.signal == "sell"


def test_a_buy_on_a_live_long_holds_it_and_is_never_entered_twice() -> None:
    held = long()
    plan = aim(buy(), held, now=NOW, limits=LIMITS)
    assert (plan.action, plan.target, plan.size) == ("hold", "hold", 0.0)
    assert plan.position == held and "not entered twice" in plan.rationale
    # the LLM asking to add to a live plan is not allowed: the rules' hold stands
    asked = aim(buy().model_copy(update={"target": "add"}), held, now=NOW, limits=LIMITS)
    assert asked.target == "hold"


def test_a_buy_on_an_expired_long_adds_within_the_position_limit() -> None:
    held = long(amount=2.0, opened=timedelta(hours=5))
    plan = aim(buy(size=0.5), held, now=NOW, limits=LIMITS)
    assert (plan.action, plan.target, plan.size) == ("buy", "add", 0.5)
    # 500 USDT at 100 is 5 SOL; 4.8 held leaves 0.2
    plan = aim(buy(size=0.5), long(amount=4.8, opened=timedelta(hours=5)), now=NOW, limits=LIMITS)
    assert plan.size == pytest.approx(0.2)
    full = aim(buy(), long(amount=5.0, opened=timedelta(hours=5)), now=NOW, limits=LIMITS)
    assert full.target == "hold" and "position limit" in full.rationale


def test_a_sell_on_a_long_closes_it_by_selling_the_amount_held() -> None:
    plan = aim(sell(size=0.3), long(amount=2.0), now=NOW, limits=LIMITS)
    assert (plan.action, plan.target, plan.size, plan.entry) == ("sell", "close", 2.0, 100.0)
    assert plan.stop_loss is None and plan.take_profit is None


def test_reduce_sells_a_share_and_reverse_on_spot_is_a_close() -> None:
    held = long(amount=2.0)
    reduced = aim(sell().model_copy(update={"target": "reduce"}), held, now=NOW, limits=LIMITS)
    assert (reduced.action, reduced.target, reduced.size) == (
        "sell",
        "reduce",
        2.0 * REDUCE_FRACTION,
    )
    reversed_ = aim(sell().model_copy(update={"target": "reverse"}), held, now=NOW, limits=LIMITS)
    assert (reversed_.action, reversed_.size) == ("sell", 2.0)
    assert "reverse = close" in reversed_.rationale


def test_a_hold_signal_holds_and_aiming_twice_changes_nothing() -> None:
    hold = TradePlan(action="hold", symbol="SOL/USDT", rationale="edge +0.01")
    assert aim(hold, long(), now=NOW, limits=LIMITS).target == "hold"
    once = aim(sell(), long(), now=NOW, limits=LIMITS)
    assert aim(once, long(), now=NOW, limits=LIMITS).model_dump(exclude={"rationale"}) == (
        once.model_dump(exclude={"rationale"})
    )


def test_horizons_and_liveness() -> None:
    assert horizon_seconds("4h") == 14400 and horizon_seconds("90m") == 5400
    assert horizon_seconds("2h30m") is None  # one unit, as the fleet watch reads it
    assert horizon_seconds("1d") == 86400 and horizon_seconds("soon") is None
    assert is_live(long(opened=timedelta(hours=3)), NOW)
    assert not is_live(long(opened=timedelta(hours=4)), NOW)
    assert is_live(long(horizon="until the trend breaks", opened=timedelta(days=9)), NOW)


def test_allowed_targets_per_case() -> None:
    assert allowed_targets("buy", None, NOW) == ("open", "hold")
    assert allowed_targets("sell", None, NOW) == ("hold",)
    assert allowed_targets("buy", long(), NOW) == ("hold",)
    assert allowed_targets("sell", long(), NOW)[0] == "close"


def answer(**fields: object) -> PlanAnswer:
    base = {
        "action": "sell",
        "confidence": 0.7,
        "stop_loss": None,
        "take_profit": None,
        "horizon": "4h",
        "rationale": "the trend broke down",
    }
    return PlanAnswer.model_validate(base | fields)


def test_llm_targets_are_checked_against_the_position() -> None:
    # a close has no exits of its own: the position's are the ones that count
    assert exits_problem(answer(target="close"), 100.0, 2.0) is None
    assert exits_problem(answer(), 100.0, 2.0) is not None  # a sell entry needs exits
    allowed = allowed_targets("sell", None, NOW)
    problem = target_problem(answer(target="close"), allowed, "no position")
    assert problem == "target close of a sell is not allowed on no position (allowed: hold)"
    assert target_problem(answer(target="close"), allowed_targets("sell", long(), NOW), "") is None
    assert target_problem(answer(), allowed, "no position") is None  # no target: the rules aim


class AnswerPort:
    """An LLM port that answers one fixed plan and keeps the messages it was sent."""

    def __init__(self, answer: PlanAnswer) -> None:
        self.answer = answer
        self.users: list[str] = []

    async def complete(self, schema: type, system: str, user: str) -> PlanAnswer:
        self.users.append(user)
        return self.answer


def features() -> Features:
    return Features(
        timeframe="1h",
        close=100.0,
        trend=0.001,
        rsi=60.0,
        macd=0.5,
        macd_signal=0.4,
        macd_hist=0.1,
        atr=2.0,
        bollinger_upper=104.0,
        bollinger_lower=96.0,
        volume_z=0.2,
        spread=0.0005,
        book_imbalance=0.1,
    )


def case(side: str) -> AnalystReport:
    return AnalystReport.model_validate(
        {
            "side": side,
            "thesis": "the trend says so",
            "evidence": [],
            "confidence": 0.5,
            "invalidation": None,
        }
    )


def ask(port: AnswerPort, held: Holding | None) -> TradePlan:
    return asyncio.run(
        ask_plan(
            port,  # type: ignore[arg-type]
            "SOL/USDT",
            features=features(),
            long=case("long"),
            short=case("short"),
            limits=LIMITS,
            holding=held,
            now=NOW,
        )
    )


def test_the_llm_is_shown_the_position_and_its_target_is_checked_against_it() -> None:
    entry = answer(action="buy", target="add", stop_loss=96.0, take_profit=106.0)
    port = AnswerPort(entry)
    with pytest.raises(LLMCheckError, match="target add of a buy is not allowed on a long"):
        ask(port, long())
    shown = json.loads(port.users[0].split("POSITION (JSON, data only):\n")[1])
    assert shown["side"] == "long" and shown["amount"] == 2.0 and shown["plan_live"] is True
    closing = ask(AnswerPort(answer(target="close")), long())
    assert (closing.action, closing.target, closing.stop_loss) == ("sell", "close", None)
    aimed = aim(closing, long(), now=NOW, limits=LIMITS)
    assert (aimed.action, aimed.size, aimed.target) == ("sell", 2.0, "close")
    flat = AnswerPort(answer(action="buy", target="open", stop_loss=96.0, take_profit=106.0))
    assert ask(flat, None).target == "open"
    assert json.loads(flat.users[0].split("POSITION (JSON, data only):\n")[1]) == {"side": "flat"}


def test_each_hold_says_why() -> None:
    held = long()
    reasons = {
        "flat sell": aim(sell(), None, now=NOW, limits=LIMITS),
        "flat buy, llm holds": aim(
            buy().model_copy(update={"target": "hold"}), None, now=NOW, limits=LIMITS
        ),
        "live buy": aim(buy(), held, now=NOW, limits=LIMITS),
        "sell, llm keeps": aim(
            sell().model_copy(update={"target": "hold"}), held, now=NOW, limits=LIMITS
        ),
    }
    why = [p.rationale.split("; ")[-1].split(")")[0] for p in reasons.values()]
    assert why == [
        "sell signal: nothing to sell",
        "buy signal: the strategist holds",
        "buy signal: not entered twice",
        "sell signal: the position is kept",
    ]
    assert all(p.action == "hold" and p.size == 0 for p in reasons.values())
