"""Every OpenAI-compatible server people run, as the test server emulates its documented ways.

The adapter is asked over real HTTP against each server profile (tests/integration/
fake_openai.py) and each structured-output way. Fleet runs (real workers, the sandbox) end
with a report for every symbol: one fleet meeting every server profile in turn and then
slow tokens, llama-cpp-python behind one slot, and answers cut at the length limit where
langchain raises nothing itself.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from agents.llm import CaseAnswer, LLMLengthError, LLMTimeoutError, climb
from agents.types import Rung
from core.config import AppConfig
from llm import usage
from llm.methods import Memory
from llm.openai_compatible import OpenAICompatibleLLM
from llm.slots import LLMSlotError, Slots
from ratelimit.backends.clients import RedisClients
from ratelimit.manager import ExchangeRateLimitManager
from tests.integration import test_agents_cycle as cycle
from tests.integration.fake_openai import FakeOpenAI, tokens
from tests.integration.sandbox_fixtures import running_sandbox
from tests.integration.workers import REPO_ROOT, worker_fleet

pytestmark = pytest.mark.integration

CASE = {"thesis": "trend and MACD agree", "confidence": 0.7, "invalidation": None, "evidence": []}
HOLD = {
    "action": "hold",
    "confidence": 0.4,
    "stop_loss": None,
    "take_profit": None,
    "horizon": "1d",
    "rationale": "the cases disagree",
}
ANSWERS = {"CaseAnswer": CASE, "PlanAnswer": HOLD, "HeadlineScores": {"scores": [0.1]}}


@pytest.fixture(autouse=True)
def counted() -> Iterator[usage.MemoryUsage]:
    """Count this test's LLM usage on its own."""
    store = usage.MemoryUsage()
    usage.install(store)
    yield store
    usage.install(None)


def adapter(
    server: FakeOpenAI,
    redis_client: redis.Redis,
    namespace: str,
    memory: Memory | None = None,
    **llm: Any,
) -> OpenAICompatibleLLM:
    settings = {"base_url": server.url, "model": "test-model", "timeout": 5.0, **llm}
    config = AppConfig.model_validate({"redis": {"key_prefix": namespace}, "llm": settings})
    limiter = ExchangeRateLimitManager(redis_client, config)
    return OpenAICompatibleLLM(config.llm, limiter, memory or Memory())


def ask(llm: OpenAICompatibleLLM, times: int = 1) -> list[CaseAnswer]:
    async def run() -> list[CaseAnswer]:
        calls = [llm.complete(CaseAnswer, "system text", "DATA") for _ in range(times)]
        return list(await asyncio.gather(*calls))

    return asyncio.run(run())


# the way auto settles on for each server, and what the answering request carried
SETTLES = {
    "openai": "json_schema",
    "vllm": "json_schema",
    "ollama": "json_schema",
    "llama_server": "json_schema",
    "lmstudio": "json_schema",
    "llama_cpp_python": "json_object",
}


@pytest.mark.parametrize("profile", sorted(SETTLES))
def test_auto_finds_the_way_each_server_takes_and_remembers_it(
    profile: str, redis_client: redis.Redis, namespace: str
) -> None:
    memory = Memory()
    with FakeOpenAI(profile, content=CASE) as server:
        llm = adapter(server, redis_client, namespace, memory)

        async def twice() -> list[CaseAnswer]:
            return [await llm.complete(CaseAnswer, "system text", "DATA") for _ in range(2)]

        first, second = asyncio.run(twice())
        sent = [r.get("response_format", {}).get("type") for r in server.behaviour.requests]
        last = server.behaviour.requests[-1]
    assert first.confidence == second.confidence == 0.7
    method, why = memory.choice(llm.config)
    assert method == SETTLES[profile]
    if profile == "llama_cpp_python":
        # the first call was refused once, fell to json_object, and the second went there
        assert sent == ["json_schema", "json_object", "json_object"]
        assert last["response_format"]["schema"]["title"] == "CaseAnswer"
        assert why.startswith("auto: json_schema refused: HTTP 500: 1 validation error")
        assert "Input should be 'text' or 'json_object'" in why
    else:
        assert sent == ["json_schema", "json_schema"]
        assert last["response_format"]["json_schema"]["name"] == "CaseAnswer"


def _sent_form(request: dict[str, Any]) -> dict[str, Any]:
    """Return what a request asked for: response_format, tools and tool_choice."""
    return {k: request[k] for k in ("response_format", "tools", "tool_choice") if k in request}


@pytest.mark.parametrize("method", ["json_schema", "json_object", "tool_call", "prompt"])
def test_each_way_sends_the_documented_form_and_reads_the_answer(
    method: str, redis_client: redis.Redis, namespace: str
) -> None:
    with FakeOpenAI("llama_server", content=CASE) as server:
        llm = adapter(server, redis_client, namespace, structured_output=method)
        (answer,) = ask(llm)
        (request,) = server.behaviour.requests
    assert answer.thesis == "trend and MACD agree"
    form, system = _sent_form(request), request["messages"][0]["content"]
    if method == "json_schema":
        assert form["response_format"]["type"] == "json_schema"
        assert form["response_format"]["json_schema"]["name"] == "CaseAnswer"
        assert "schema" in form["response_format"]["json_schema"]
    elif method == "json_object":
        assert form["response_format"]["type"] == "json_object"
        assert form["response_format"]["schema"] == CaseAnswer.model_json_schema()
        assert "JSON Schema" in system
    elif method == "tool_call":
        assert form["tools"][0]["function"]["name"] == "CaseAnswer"
        assert form["tool_choice"] == {"type": "function", "function": {"name": "CaseAnswer"}}
        assert "response_format" not in form
    else:
        assert form == {}, "the prompt way sends no response_format and no tools"
        assert "JSON Schema" in system and "CaseAnswer" in system


def test_a_way_the_server_refuses_falls_to_rules_saying_so(
    redis_client: redis.Redis, namespace: str
) -> None:
    with FakeOpenAI("lmstudio", content=CASE) as server:
        llm = adapter(server, redis_client, namespace, structured_output="json_object")

        async def ladder() -> tuple[Any, Rung, str | None]:
            return await climb(
                lambda: llm.complete(CaseAnswer, "s", "u"),
                lambda: None,
                lambda: CaseAnswer(thesis="rules", evidence=[], confidence=0.1, invalidation=None),
                lambda answer: None,
            )

        _, rung, reason = asyncio.run(ladder())
    assert rung is Rung.RULES
    assert reason is not None
    # langchain raises openai's 400 as its OpenAIInvalidRequestError
    assert reason.startswith("llm refused the structured-output method: ")
    assert "json_object refused: HTTP 400: 'response_format.type' must be 'json_schema'" in reason


@pytest.mark.parametrize("method", ["json_schema", "json_object", "tool_call", "prompt"])
def test_an_answer_cut_at_max_tokens_is_a_length_error_for_every_way(
    method: str, redis_client: redis.Redis, namespace: str, counted: usage.MemoryUsage
) -> None:
    with FakeOpenAI("llama_server", content=CASE) as server:
        llm = adapter(server, redis_client, namespace, structured_output=method, max_tokens=8)
        with pytest.raises(LLMLengthError, match=r"length limit \(8 tokens\)"):
            ask(llm)
        (request,) = server.behaviour.requests
    assert request["max_completion_tokens"] == 8
    day = counted.day()
    assert day.calls == 1 and day.failed == 1 and day.completion_tokens == 8


def test_the_servers_usage_is_recorded_for_each_call(
    redis_client: redis.Redis, namespace: str, counted: usage.MemoryUsage
) -> None:
    with FakeOpenAI("llama_cpp_python", content=CASE) as server:
        llm = adapter(server, redis_client, namespace)
        ask(llm)
        answered = server.behaviour.requests[-1]
    day = counted.day()
    # the refused json_schema call reported nothing; the json_object one its honest usage
    assert day.calls == 2 and day.failed == 1 and day.unmetered == 1
    assert day.completion_tokens == tokens(json.dumps(CASE))
    said = "".join(m["content"] for m in answered["messages"])
    assert day.prompt_tokens == tokens(said)


def test_max_concurrency_keeps_a_serial_server_to_one_request_at_a_time(
    redis_client: redis.Redis, namespace: str
) -> None:
    with FakeOpenAI("llama_server", content=CASE, serial=True, token_delay=0.002) as server:
        ask(adapter(server, redis_client, namespace), times=4)
        swamped = server.behaviour.max_in_flight
        server.behaviour.max_in_flight = 0
        # another timeout: langchain keeps one HTTP client per settings, bound to its loop
        capped = adapter(server, redis_client, namespace, max_concurrency=1, timeout=4.0)
        answers = ask(capped, times=4)
        kept = server.behaviour.max_in_flight
    assert swamped == 4, "without a cap every call is sent at once"
    assert kept == 1 and len(answers) == 4


def test_a_call_that_gets_no_slot_in_time_falls_to_rules_as_busy(
    redis_client: redis.Redis, namespace: str
) -> None:
    with FakeOpenAI("llama_server", content=CASE, serial=True, token_delay=0.05) as server:
        llm = adapter(server, redis_client, namespace, max_concurrency=1, timeout=1.0)

        async def two() -> list[Any]:
            return list(
                await asyncio.gather(
                    llm.complete(CaseAnswer, "s", "u"),
                    llm.complete(CaseAnswer, "s", "u"),
                    return_exceptions=True,
                )
            )

        results = asyncio.run(two())
        sent = len(server.behaviour.requests)
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(failed) == 2, results  # the first times out; the second never gets the slot
    assert {type(f) for f in failed} == {LLMTimeoutError, LLMSlotError}
    assert sent == 1, "the call without a slot was never sent"
    assert LLMSlotError.kind == "llm server busy"


def test_a_crashed_holders_slot_frees_when_its_lease_ends(
    redis_client: redis.Redis, namespace: str
) -> None:
    from core.keys import KeySpace

    slots = Slots(1, RedisClients(redis_client), KeySpace(namespace))

    async def run() -> float:
        loop = asyncio.get_running_loop()
        # a holder that dies holding the slot: its lease (0.3 s) is never given back
        assert await slots._run("dead-worker", "take", 300)
        async with slots.held(loop.time() + 5.0) as waited:
            return waited

    waited = asyncio.run(run())
    assert waited > 0, "the slot was held until the dead holder's lease ended"


def test_a_timeout_cancels_the_request_and_the_server_stops_generating(
    redis_client: redis.Redis, namespace: str
) -> None:
    with FakeOpenAI("llama_server", content=CASE, token_delay=0.2) as server:
        llm = adapter(server, redis_client, namespace, timeout=0.5)
        with pytest.raises(LLMTimeoutError, match=r"within 0\.5s"):
            ask(llm)
        asyncio.run(asyncio.sleep(0.5))  # the server's next token finds the connection closed
        aborted = server.behaviour.aborted
    assert aborted == 1, "the closed connection stopped the generation"


def llm_check(server: FakeOpenAI, tmp_path: Path, **llm: Any) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.yaml"
    settings = {"base_url": server.url, "model": "test-model", "timeout": 5, **llm}
    config.write_text(json.dumps({"llm": settings}))
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", "llm", "check", "--config", str(config)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_llm_check_prints_the_way_it_chose_and_why(tmp_path: Path) -> None:
    answer = {"answer": "the trend is up", "confidence": 0.6}
    with FakeOpenAI("llama_cpp_python", by_schema={"CheckAnswer": answer}) as server:
        done = llm_check(server, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert f"LLM server: {server.url}  model: test-model" in out
    assert "json_schema  failed    llm refused the structured-output method" in out
    assert "Input should be 'text' or 'json_object'" in out
    assert "json_object  works" in out and "tool_call    works" in out
    assert "uses json_object: auto: json_schema refused: HTTP 500: 1 validation error" in out
    assert '"the trend is up"' in out and "latency per token:" in out
    assert "context size: not reported by the server" in out


@pytest.mark.parametrize(
    ("profile", "source"),
    [
        ("llama_server", "llama-server /props n_ctx"),
        ("ollama", "Ollama /api/show context_length"),
        ("vllm", "vLLM /v1/models max_model_len"),
    ],
)
def test_llm_check_reads_the_context_size_each_server_reports(
    profile: str, source: str, tmp_path: Path
) -> None:
    from llm.check import check

    answer = {"answer": "up", "confidence": 0.5}
    with FakeOpenAI(profile, by_schema={"CheckAnswer": answer}) as server:
        config = AppConfig.model_validate({"llm": {"base_url": server.url, "model": "test-model"}})
        report = asyncio.run(check(config.llm))
    assert report.works and report.chosen == "json_schema"
    assert report.context == (8192, source)


def test_llm_check_exits_non_zero_when_nothing_works(tmp_path: Path) -> None:
    with FakeOpenAI("openai", mode="429") as server:
        done = llm_check(server, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "no way works as configured" in done.stdout


def fleet_run(
    redis_url: str, namespace: str, tmp_path: Path, server: FakeOpenAI, **llm: Any
) -> list[dict[str, Any]]:
    """Run one analysis cycle of two symbols on real workers; return their reports."""
    symbols = ["BTC/USDT", "ETH/USDT"]
    with running_sandbox(starting_balances={"USDT": 10000}, symbols=symbols) as sb:
        settings = {"base_url": server.url, "model": "local", "timeout": 10, **llm}
        config = cycle.write_config(tmp_path, sb.url, symbols, llm=settings)
        with worker_fleet(redis_url, namespace, tmp_path, config=config) as fleet:
            fleet.start("agents", concurrency=4)
            run = cycle.analyse(fleet.env(), config)
            output, _ = run.communicate(timeout=180)
    assert run.returncode == 0, output
    found = cycle.reports(tmp_path)
    assert sorted(r["symbol"] for r in found) == symbols, "a report for every symbol"
    return found


def test_a_fleet_on_serial_llama_cpp_python_uses_json_object_one_call_at_a_time(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    with FakeOpenAI(
        "llama_cpp_python", by_schema=ANSWERS, serial=True, token_delay=0.001
    ) as server:
        found = fleet_run(redis_url, namespace, tmp_path, server, max_concurrency=1)
        seen, sent = server.behaviour.max_in_flight, server.behaviour.requests
    assert seen == 1, "the serial server never saw two requests at once"
    kinds = {r.get("response_format", {}).get("type") for r in sent}
    assert "json_object" in kinds
    for report in found:
        for stage in ("long", "short"):
            assert report[stage]["rung"] == "llm", report[stage]
            assert report[stage]["fallback_reason"] is None


def test_a_fleet_whose_prompted_answers_are_cut_falls_to_rules_and_says_why(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    with FakeOpenAI("llama_cpp_python", by_schema=ANSWERS) as server:
        found = fleet_run(
            redis_url, namespace, tmp_path, server, structured_output="prompt", max_tokens=8
        )
        sent = server.behaviour.requests
    assert sent and all("response_format" not in r for r in sent)
    cut = "llm answer cut at the length limit: LLMLengthError: the answer was cut at the length "
    for report in found:
        for stage in ("long", "short", "plan"):
            assert report[stage]["rung"] == "rules", report[stage]
            assert report[stage]["fallback_reason"].startswith(cut), report[stage]


def test_one_fleet_meets_every_server_in_turn_and_each_run_completes(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    """One run per server profile, then one against slow tokens, on the same workers.

    The workers remember per server which ways it refused, so a later profile that also
    refuses the way they fell back to makes them fall again within the call; every run ends
    with a report for every symbol, and the report names the rung and why.
    """
    symbols = ["BTC/USDT", "ETH/USDT"]
    profiles = ["openai", "vllm", "ollama", "llama_server", "llama_cpp_python", "lmstudio"]
    done: dict[str, list[dict[str, Any]]] = {}
    with (
        FakeOpenAI(profiles[0], by_schema=ANSWERS) as server,
        running_sandbox(starting_balances={"USDT": 10000}, symbols=symbols) as sb,
    ):
        settings = {"base_url": server.url, "model": "local", "timeout": 4}
        config = cycle.write_config(tmp_path, sb.url, symbols, llm=settings)
        with worker_fleet(redis_url, namespace, tmp_path, config=config) as fleet:
            fleet.start("agents", concurrency=4)
            for behaviour in [*profiles, "slow"]:
                if behaviour == "slow":  # 1 s per token: no answer within llm.timeout
                    server.behaviour.token_delay = 1.0
                else:
                    server.behaviour.profile = behaviour
                seen = {p.parent.name for p in (tmp_path / "reports").glob("*/*.json")}
                run = cycle.analyse(fleet.env(), config)
                output, _ = run.communicate(timeout=180)
                assert run.returncode == 0, (behaviour, output)
                new = [r for r in cycle.reports(tmp_path) if r["run_id"] not in seen]
                assert sorted(r["symbol"] for r in new) == symbols, (behaviour, output)
                done[behaviour] = new
        used = {(r.get("response_format") or {}).get("type") for r in server.behaviour.requests}
    for behaviour in profiles:
        for report in done[behaviour]:
            for stage in ("long", "short", "strategy"):
                answered = report["rungs"][stage]
                assert answered == {"rung": "llm", "reason": None}, (behaviour, stage, answered)
    timed_out = "llm timed out: "
    for report in done["slow"]:
        for stage in ("long", "short", "strategy"):
            answered = report["rungs"][stage]
            # the cases fall to the LLM's answers of the runs before (cached); the plan to rules
            below = ("cache",) if stage != "strategy" else ("rules", "abstain")
            assert answered["rung"] in below, (stage, answered)
            assert answered["reason"].startswith(timed_out), answered
    # llama-cpp-python refused json_schema, LM Studio then refused json_object
    assert {"json_schema", "json_object"} <= used, used
