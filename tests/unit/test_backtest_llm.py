"""The LLM replay's pure parts against a fake port: the record file (a torn last line, a bad
line), which failures are recorded, the analysts' cache rung in data time, the tally of each
walk-forward window, and a rules-only replay that says nothing of an LLM."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pydantic import BaseModel

from agents.llm import LLMLengthError, LLMUnavailableError
from agents.types import TradePlan
from backtest.data import synthetic
from backtest.llm_record import Entry, LLMTally, Record, RecordError
from backtest.llm_replay import LLMStrategy, llm_strategy
from backtest.replay import Decided, Moment, Settings, replay, walk_forward

T = TypeVar("T", bound=BaseModel)
SETTINGS = Settings(symbol="BTC/USDT")
#: A case every moment's data bears out: the spread is 0 (bid = ask = the close) and no
#: invalidation is given, so the checks against the data pass at any price.
CASE = {
    "thesis": "the market is calm and the spread is flat",
    "confidence": 0.6,
    "evidence": [{"name": "spread", "value": 0.0, "meaning": "no spread"}],
    "invalidation": None,
}
HOLD = {
    "action": "hold",
    "target": "hold",
    "confidence": 0.2,
    "stop_loss": None,
    "take_profit": None,
    "horizon": "4h",
    "rationale": "no edge either way, so the desk waits",
}


class FakePort:
    """Answer each schema with its dict; ``fail`` maps a call number (from 1) to an error."""

    def __init__(self, fail: dict[int, Exception] | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.fail = fail or {}

    async def complete(self, schema: type[T], system: str, user: str) -> T:
        self.calls.append((schema.__name__, user))
        error = self.fail.get(len(self.calls))
        if error is not None:
            raise error
        return schema.model_validate(CASE if schema.__name__ == "CaseAnswer" else HOLD)


def entry(data_ms: int, answer: dict[str, Any] | None = None) -> Entry:
    return Entry(
        "h" * 64, data_ms, 0, "CaseAnswer", "m", answer or CASE, None, 1, 10, 5, None, "s", "u"
    )


def test_a_torn_last_line_is_dropped_and_the_next_answer_starts_its_own(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(entry(1).line() + entry(2).line()[:40])  # a crash mid-write
    record = Record(path)
    assert [e.data_ms for e in record.entries()] == [1]
    record.add(entry(3))
    assert [e.data_ms for e in Record(path).entries()] == [1, 3]


def test_a_bad_line_before_the_last_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(entry(1).line() + '{"not": "an answer"}\n' + entry(2).line())
    with pytest.raises(RecordError, match=r"r\.jsonl: line 2 is not an answer"):
        Record(path).entries()


def test_an_unreachable_llm_is_not_recorded_a_cut_answer_is(tmp_path: Path) -> None:
    candles = synthetic(40, seed=1)
    path = tmp_path / "r.jsonl"
    port = FakePort(
        fail={
            1: LLMUnavailableError("the LLM provider cannot be reached"),
            2: LLMLengthError("cut"),
        }
    )
    with LLMStrategy(Record(path), port) as strategy:
        first = replay(candles, SETTINGS, strategy=strategy)
    recorded = Record(path).entries()
    # the first question was not answered and not recorded; the cut one is, as its failure
    assert len(recorded) == len(port.calls) - 1
    assert recorded[0].failure is not None and recorded[0].failure.startswith(
        "llm answer cut at the length limit"
    )
    assert first.decisions[0].fallback_reason.startswith("long: llm unavailable")
    assert first.decisions[0].fallback_reason.count("short: llm answer cut") == 1
    again_port = FakePort()
    with LLMStrategy(Record(path), again_port) as strategy:
        again = replay(candles, SETTINGS, strategy=strategy)
    # the rerun asked the one question nobody answered, and replayed the rest
    assert len(again_port.calls) == 1
    assert again.llm_usage is not None and again.llm_usage["replayed"] == len(recorded)
    assert again.decisions[0].fallback_reason.startswith("short: llm answer cut")
    assert again.decisions[1:] == first.decisions[1:]


def test_a_failed_case_stands_on_the_answer_of_up_to_900_s_before(tmp_path: Path) -> None:
    quarter = 900_000
    candles = synthetic(60, seed=3, step_ms=quarter)
    settings = Settings(symbol="BTC/USDT", timeframe="15m")
    port = FakePort()
    # the long case (asked first) fails at the 21st and 22nd decisions: 15 and 30 minutes
    # after its last answer
    failing = {candles[20].time + quarter, candles[21].time + quarter}

    with LLMStrategy(Record(tmp_path / "r.jsonl"), port) as llm:

        def strategy(moment: Moment) -> TradePlan | Decided:
            if int(moment.snapshot.taken_at.timestamp() * 1000) in failing:
                port.fail[len(port.calls) + 1] = LLMUnavailableError("down")
            return llm(moment)

        decisions = replay(candles, settings, strategy=strategy).decisions
    assert decisions[19].rungs == "long=llm short=llm strategy=llm"
    assert decisions[20].rungs == "long=cache short=llm strategy=llm"
    assert decisions[20].fallback_reason == "long: llm unavailable: LLMUnavailableError: down"
    assert decisions[21].rungs == "long=rules short=llm strategy=llm"


def test_each_window_counts_its_own_requests(tmp_path: Path) -> None:
    candles = synthetic(120, seed=5)
    port = FakePort()
    with LLMStrategy(Record(tmp_path / "r.jsonl"), port) as strategy:
        parts = walk_forward(candles, SETTINGS, 3, strategy=strategy)
        total = strategy.tally()
    usages = [p.llm_usage for p in parts]
    assert all(u is not None and u["requests"] == 0 for u in usages)  # a fake port: no HTTP
    recorded = [u["recorded"] for u in usages if u is not None]
    assert sum(recorded) == total.recorded == len(port.calls) and min(recorded) > 0
    assert (total - total) == LLMTally(model=None, record=total.record)


def test_a_rules_replay_says_nothing_of_an_llm() -> None:
    result = replay(synthetic(60, seed=2), SETTINGS)
    assert result.llm_usage is None
    assert {(d.rungs, d.fallback_reason) for d in result.decisions} == {("", "")}


def test_an_llm_configured_with_nothing_to_connect_it_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("llm:\n  base_url: http://127.0.0.1:9/v1\n")
    with pytest.raises(ValueError, match="cannot connect to it"):
        llm_strategy(tmp_path / "r.jsonl", config=config, env={})
    # without an LLM it replays the record, the rules where the record has no answer
    config.write_text("{}\n")
    with llm_strategy(tmp_path / "r.jsonl", config=config, env={}) as strategy:
        assert strategy.port is None


def test_a_host_llm_is_asked_on_the_hosts_runner_and_no_config_is_read(tmp_path: Path) -> None:
    from backtest.llm_replay import HostLLM
    from core.config import LLMConfig

    ran: list[str] = []

    def runner(coro: Any) -> Any:
        ran.append(coro.__qualname__)
        return asyncio.run(coro)

    port = FakePort()
    llm = LLMConfig(base_url="http://127.0.0.1:9/v1", model="host-model", price_per_1k_tokens=1)
    missing = tmp_path / "nowhere.yaml"  # read, it would stop the run: a host's LLM is its own
    host = HostLLM(config=llm, port=port, run=runner)
    with llm_strategy(tmp_path / "r.jsonl", config=missing, sampling=1, host=host) as strategy:
        result = replay(synthetic(40, seed=1), SETTINGS, strategy=strategy)
    assert ran == ["LLMStrategy.decide"] * len(result.decisions)
    assert result.llm_usage is not None and result.llm_usage["recorded"] == len(port.calls) > 0
    assert result.llm_usage["model"] == "host-model" and result.llm_usage["sampling"] == 1
    assert result.llm_usage["cost"] == 0  # priced, and nothing was metered by a fake port
    assert {e.sampling for e in Record(tmp_path / "r.jsonl").entries()} == {1}
    # a host without an LLM: only the record's answers, the rules where it has none
    bare = HostLLM(config=LLMConfig(), port=None, run=runner)
    with llm_strategy(tmp_path / "other.jsonl", config=missing, host=bare) as strategy:
        alone = replay(synthetic(40, seed=1), SETTINGS, strategy=strategy)
    assert all("llm off: no llm.base_url" in d.fallback_reason for d in alone.decisions)
