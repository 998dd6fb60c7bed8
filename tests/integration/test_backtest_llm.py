"""The LLM rung in the replay, against a real OpenAI-compatible server over HTTP (FakeOpenAI).

A first run asks the server at every decision and records each answer; a rerun with the
record asks nothing and decides the same; a replay of the data cut at T with the whole run's
record asks nothing either (the prompt at T holds nothing after T); K samplings record K
answers per prompt and moment; answers off the schema fall to the rules and are recorded as
such; token totals are the server's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import astuple, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agents.types import Candle, NewsItem
from backtest.data import synthetic
from backtest.llm_record import Entry, Record
from backtest.llm_replay import llm_strategy
from backtest.replay import Decision, Result, Settings, replay
from llm.openai_compatible import OpenAICompatibleLLM
from tests.integration.fake_openai import FakeOpenAI, _completion
from tests.unit.test_backtest_llm import CASE

pytestmark = pytest.mark.integration

HOUR = 3_600_000
SETTINGS = Settings(symbol="BTC/USDT")
BARS = 240

#: A buy with fixed exits: inside the ATR bands near a price of 100 (an LLM answer that
#: trades), refused by the checks far from it or while a position's plan is live (the rules).
PLAN = {
    "action": "buy",
    "target": "open",
    "confidence": 0.7,
    "stop_loss": 97.0,
    "take_profit": 104.0,
    "horizon": "4h",
    "rationale": "both cases agree the market is calm enough to enter",
}


def config_file(tmp_path: Path, url: str | None, name: str = "config.yaml", more: str = "") -> Path:
    """Write a config whose ``llm`` is the fake server (None: no LLM configured)."""
    llm = f"llm:\n  base_url: {url}\n  model: test-model\n  timeout: 30\n{more}" if url else ""
    path = tmp_path / name
    path.write_text(llm or "{}\n")
    return path


def news(candles: Sequence[Candle]) -> list[NewsItem]:
    """Return a headline every 7 hours over the candles, some before, some after each moment."""
    first = datetime.fromtimestamp(candles[0].time / 1000, UTC)
    return [
        NewsItem(
            id=f"n{k}",
            title=f"headline {k} about bitcoin markets",
            source="test",
            published=first + timedelta(hours=7 * k, minutes=30),
            symbols=("BTC/USDT",),
            sentiment=0.2 if k % 2 else -0.2,
        )
        for k in range(len(candles) // 7)
    ]


def run(
    candles: Sequence[Candle],
    record: Path,
    config: Path,
    sampling: int = 0,
    items: Sequence[NewsItem] = (),
) -> Result:
    with llm_strategy(
        record, config=config, sampling=sampling, env={}, connect=OpenAICompatibleLLM
    ) as strategy:
        return replay(candles, SETTINGS, news=items, strategy=strategy)


def rows(decisions: Sequence[Decision]) -> list[tuple[Any, ...]]:
    return [astuple(d) for d in decisions]


def reported(server: FakeOpenAI) -> tuple[int, int]:
    """Return the prompt and completion tokens the server reported over its requests."""
    prompt = completion = 0
    for body in server.behaviour.requests:
        usage = _completion(body, server.behaviour)[0]["usage"]
        prompt += usage["prompt_tokens"]
        completion += usage["completion_tokens"]
    return prompt, completion


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(profile="vllm") as fake:
        fake.behaviour.by_schema = {"CaseAnswer": CASE, "PlanAnswer": PLAN}
        yield fake


@dataclass
class Recorded:
    """The first run over 240 bars with news: what it asked, recorded and decided."""

    server: FakeOpenAI
    candles: list[Candle]
    items: list[NewsItem]
    config: Path
    record: Path
    result: Result
    asked: int
    reported: tuple[int, int]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    tmp_path = tmp_path_factory.mktemp("recorded")
    with FakeOpenAI(profile="vllm") as fake:
        fake.behaviour.by_schema = {"CaseAnswer": CASE, "PlanAnswer": PLAN}
        candles = synthetic(BARS, seed=4)
        items = news(candles)
        config, record = config_file(tmp_path, fake.url), tmp_path / "answers.jsonl"
        result = run(candles, record, config, items=items)
        asked = len(fake.behaviour.requests)
        yield Recorded(fake, candles, items, config, record, result, asked, reported(fake))


def data_of(entry: Entry) -> dict[str, Any]:
    """Return the JSON data of a recorded user message (the POSITION section apart)."""
    body = entry.user.removeprefix("DATA (JSON):\n").split("\nPOSITION (JSON, data only):\n")
    return json.loads(body[0])


def test_a_rerun_with_the_record_asks_nothing_and_decides_the_same(recorded: Recorded) -> None:
    first, asked, entries = recorded.result, recorded.asked, Record(recorded.record).entries()
    again = run(recorded.candles, recorded.record, recorded.config, items=recorded.items)

    assert first.llm_usage is not None and again.llm_usage is not None
    # every answer was asked once and recorded once; the rerun asked nothing
    assert asked == len(entries) == first.llm_usage["requests"] == first.llm_usage["recorded"]
    assert asked > 2 * len(first.decisions)  # two cases per decision, a plan when an ATR exists
    assert len(recorded.server.behaviour.requests) == asked
    assert again.llm_usage["requests"] == 0 and again.llm_usage["replayed"] == asked
    assert again.llm_usage["prompt_tokens"] == 0
    assert rows(again.decisions) == rows(first.decisions)
    assert [astuple(f) for f in again.fills] == [astuple(f) for f in first.fills]
    # the tokens are the server's, and the replayed answers say what they cost when asked
    prompt, completion = recorded.reported
    assert (first.llm_usage["prompt_tokens"], first.llm_usage["completion_tokens"]) == (
        prompt,
        completion,
    )
    assert sum(e.prompt_tokens or 0 for e in entries) == prompt
    assert again.llm_usage["replayed_prompt_tokens"] == prompt
    assert first.llm_usage["cost"] is None  # no price configured: tokens only
    # the rung that decided: the LLM's plans, the rules where a plan failed its checks, the
    # rules' abstention before there was an ATR
    rungs = {d.rung for d in first.decisions}
    assert rungs == {"llm", "rules", "abstain"}
    assert any(d.rung == "llm" and d.action == "buy" for d in first.decisions)
    fallen = [d for d in first.decisions if d.rung == "rules"]
    assert fallen and all("llm answer rejected" in d.fallback_reason for d in fallen)
    assert all("long=llm" in d.rungs and "short=llm" in d.rungs for d in first.decisions)


def test_the_prompt_at_t_holds_nothing_after_t(recorded: Recorded) -> None:
    candles, items, whole = recorded.candles, recorded.items, recorded.result
    decided = {d.time for d in whole.decisions}
    close_at = {c.time + HOUR: c.close for c in candles}
    for entry in Record(recorded.record).entries():
        data = data_of(entry)
        # each answer saw the data of one decision time: the close then, no headline after it
        assert entry.data_ms in decided
        assert data["features"]["close"] == pytest.approx(close_at[entry.data_ms], rel=1e-5)
        seen = entry.data_time
        assert all(
            datetime.fromisoformat(h["published"].replace("Z", "+00:00")) < seen
            for h in data["headlines"]
        )
    assert any(data_of(e)["headlines"] for e in Record(recorded.record).entries())
    # the data cut at T, replayed with the whole run's record: every prompt up to T is one the
    # whole run asked (a prompt that saw past T would miss and be asked), and so every decision
    asked = len(recorded.server.behaviour.requests)
    for cut in (60, 131, 200):
        part = candles[:cut]
        until = part[-1].time + HOUR
        known = [n for n in items if n.published.timestamp() * 1000 <= until]
        cut_run = run(part, recorded.record, recorded.config, items=known)
        assert cut_run.llm_usage is not None and cut_run.llm_usage["requests"] == 0, cut
        assert rows(cut_run.decisions) == rows([d for d in whole.decisions if d.time <= until])
    assert len(recorded.server.behaviour.requests) == asked


def test_k_samplings_record_k_answers_per_moment(server: FakeOpenAI, tmp_path: Path) -> None:
    candles = synthetic(80, seed=9)
    priced = "  price_per_1k_tokens: 0.5\n  price_per_1k_completion_tokens: 2.0\n"
    config = config_file(tmp_path, server.url, more=priced)
    record = tmp_path / "answers.jsonl"
    # FakeOpenAI answers what the test set, whatever the sampling: the test varies it
    first = run(candles, record, config, sampling=0)
    server.behaviour.by_schema = {"CaseAnswer": {**CASE, "confidence": 0.3}, "PlanAnswer": PLAN}
    second = run(candles, record, config, sampling=1)
    entries = Record(record).entries()
    assert first.llm_usage is not None and second.llm_usage is not None
    prompt, completion = reported(server)
    spent = (prompt * 0.5 + completion * 2.0) / 1000
    assert first.llm_usage["cost"] + second.llm_usage["cost"] == pytest.approx(spent)
    cases = [e for e in entries if e.schema == "CaseAnswer"]
    per_moment: dict[tuple[str, int], dict[int, float]] = {}
    for e in cases:
        assert e.answer is not None
        per_moment.setdefault((e.prompt_hash, e.data_ms), {})[e.sampling] = e.answer["confidence"]
    assert per_moment and all(answers == {0: 0.6, 1: 0.3} for answers in per_moment.values())
    asked = len(server.behaviour.requests)
    for sampling, result in ((0, first), (1, second)):
        replayed = run(candles, record, config, sampling=sampling)
        assert replayed.llm_usage is not None and replayed.llm_usage["requests"] == 0
        assert replayed.llm_usage["sampling"] == sampling and replayed.llm_usage["cost"] == 0
        assert replayed.llm_usage["replayed_cost"] == pytest.approx(result.llm_usage["cost"])
        assert rows(replayed.decisions) == rows(result.decisions)
    assert len(server.behaviour.requests) == asked


def test_answers_off_the_schema_fall_to_the_rules_and_replay_as_such(tmp_path: Path) -> None:
    candles = synthetic(100, seed=2)
    record = tmp_path / "answers.jsonl"
    with FakeOpenAI(profile="llama_server") as fake:
        fake.behaviour.content = {"thesis": "moon", "confidence": 7}  # off every schema
        config = config_file(tmp_path, fake.url)
        first = run(candles, record, config)
        asked = len(fake.behaviour.requests)
        again = run(candles, record, config)
        # no LLM configured and nothing recorded: the rules, saying why, and no request
        empty = run(candles, tmp_path / "empty.jsonl", config_file(tmp_path, None, "off.yaml"))
        assert len(fake.behaviour.requests) == asked
    entries = Record(record).entries()
    assert entries and all(e.answer is None and e.failure for e in entries)
    assert all(e.failure.startswith("llm answer off schema") for e in entries if e.failure)
    assert first.llm_usage is not None and again.llm_usage is not None
    assert first.llm_usage["requests"] == asked == len(entries)
    assert again.llm_usage["requests"] == 0 and again.llm_usage["replayed"] == len(entries)
    assert rows(again.decisions) == rows(first.decisions)
    assert {d.rung for d in first.decisions} <= {"rules", "abstain"}
    assert all("long: llm answer off schema" in d.fallback_reason for d in first.decisions)
    assert empty.llm_usage is not None and empty.llm_usage["requests"] == 0
    assert all("llm off: no llm.base_url" in d.fallback_reason for d in empty.decisions)
    assert all("long=rules" in d.rungs for d in empty.decisions)
    # the same record without an LLM configured replays it all
    replayed = run(candles, record, config_file(tmp_path, None, "off.yaml"))
    assert replayed.llm_usage is not None and replayed.llm_usage["replayed"] == len(entries)
    assert rows(replayed.decisions) == rows(first.decisions)


def test_crypto_ai_backtest_llm_records_then_replays(server: FakeOpenAI, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from backtest.cli import make_app

    config = config_file(tmp_path, server.url, more="  price_per_1k_tokens: 0.15\n")
    out = tmp_path / "out"
    args = ["--synthetic", "80", "--symbol", "BTC/USDT", "--llm", "--seeds", "2",
            "--config", str(config), "--out", str(out)]  # fmt: skip
    app = make_app(None, OpenAICompatibleLLM)
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    asked = len(server.behaviour.requests)
    decisions = (out / "decisions.csv").read_text()
    summary = json.loads((out / "summary.json").read_text())
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert len(server.behaviour.requests) == asked
    assert (out / "decisions.csv").read_text() == decisions
    assert summary["llm"]["requests"] > 0 and summary["llm"]["cost"] > 0
    assert summary["seeds"]["runs"][1]["llm"]["sampling"] == 1
    assert json.loads((out / "summary.json").read_text())["llm"]["requests"] == 0
    assert decisions.splitlines()[0].endswith(",rung,reason,rungs,fallback_reason")
    assert "llm: 0 requests" in again.output and (out / "llm_record.jsonl").is_file()
    refused = CliRunner().invoke(make_app(), args)
    assert refused.exit_code == 2 and "cannot connect to it" in refused.output
