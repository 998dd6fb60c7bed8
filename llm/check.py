"""``crypto-ai llm check``: probe the configured LLM server and say what works, on one screen.

Each structured-output way (llm/methods.py) is asked one small question; the screen shows
whether each worked and why not, the way ``llm.structured_output`` uses and why, a sample
answer, the latency per completion token (from the server's ``usage``), and the context size
where the server reports one: llama-server ``GET /props`` (``n_ctx``), Ollama
``POST /api/show`` (``<arch>.context_length``), vLLM ``GET /v1/models`` (``max_model_len``).
The probes bypass the fleet's limiter and slots, but their usage is recorded like any call.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from agents.llm import LLMError, brief
from core.config import LLMConfig
from llm.methods import AUTO_ORDER, LLMRefusedError, Memory, Method, brief_text
from llm.openai_compatible import OpenAICompatibleLLM

SYSTEM = "You check that the LLM server of a trading assistant answers. Reply in JSON."
USER = (
    "In one sentence: what does a rising 50-period moving average suggest for BTC/USDT? "
    "Give your confidence from 0 to 1."
)
#: Seconds to wait for a server's info routes (context size).
INFO_TIMEOUT = 3.0


class CheckAnswer(BaseModel):
    """The probe's question: a sentence and a confidence."""

    model_config = ConfigDict(extra="forbid")
    answer: str
    confidence: float = Field(ge=0.0, le=1.0)


@dataclass
class Probe:
    """One way tried: whether it worked, why not, its time and usage, its answer."""

    method: Method
    ok: bool
    why: str = ""
    refused: str | None = None
    seconds: float = 0.0
    completion_tokens: int | None = None
    sample: CheckAnswer | None = None


@dataclass
class CheckReport:
    """What the probes found about one server."""

    url: str
    model: str
    probes: list[Probe] = field(default_factory=list)
    chosen: Method | None = None
    why: str = ""
    context: tuple[int, str] | None = None

    @property
    def works(self) -> bool:
        """Return True when the way the config uses answered."""
        return any(p.ok and p.method == self.chosen for p in self.probes)


async def probe(llm: OpenAICompatibleLLM, method: Method) -> Probe:
    """Return what one ask of the ``method`` way gave."""
    deadline = asyncio.get_running_loop().time() + llm.config.timeout
    try:
        answer = await llm.ask(CheckAnswer, SYSTEM, USER, method, deadline)
    except LLMError as exc:
        refused = brief(exc) if isinstance(exc, LLMRefusedError) else None
        return Probe(method, False, f"{exc.kind}: {brief(exc)}", refused)
    sample = answer.value if isinstance(answer.value, CheckAnswer) else None
    return Probe(method, True, "", None, answer.seconds, answer.completion_tokens, sample)


def choose(config: LLMConfig, probes: list[Probe]) -> tuple[Method | None, str]:
    """Return the way calls will use with these results, and why, in one line."""
    memory = Memory()
    for p in probes:
        if p.refused is not None:
            memory.refuse(config, p.method, p.refused)
    method, why = memory.choice(config)
    found = next(p for p in probes if p.method == method)
    if found.ok:
        return method, why
    working = [p.method for p in probes if p.ok]
    hint = f"; set llm.structured_output: {working[0]}" if working else ""
    return None, f"{method} would be used ({why}) but failed: {found.why}{hint}"


async def check(config: LLMConfig) -> CheckReport:
    """Return what the configured server does with each way, and its context size."""
    llm = OpenAICompatibleLLM(config, memory=Memory())
    report = CheckReport(url=config.base_url or "https://api.openai.com/v1", model=config.model)
    report.probes = [await probe(llm, method) for method in AUTO_ORDER]
    report.chosen, report.why = choose(config, report.probes)
    report.context = await context_size(config)
    return report


async def context_size(config: LLMConfig) -> tuple[int, str] | None:
    """Return the server's context size and where it was read, or None if none reports it."""
    base = (config.base_url or "https://api.openai.com/v1").rstrip("/")
    root = base.removesuffix("/v1")
    headers = {}
    if config.api_key is not None:
        headers["Authorization"] = f"Bearer {config.api_key.get_secret_value()}"
    async with httpx.AsyncClient(timeout=INFO_TIMEOUT, headers=headers) as client:
        for read in (_llama_server, _ollama, _vllm):
            try:
                found = await read(client, root, base, config.model)
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                continue
            if found is not None:
                return found
    return None


async def _llama_server(
    client: httpx.AsyncClient, root: str, base: str, model: str
) -> tuple[int, str] | None:
    answer = (await client.get(f"{root}/props")).raise_for_status().json()
    n_ctx = answer["default_generation_settings"]["n_ctx"]
    return int(n_ctx), "llama-server /props n_ctx"


async def _ollama(
    client: httpx.AsyncClient, root: str, base: str, model: str
) -> tuple[int, str] | None:
    answer = (await client.post(f"{root}/api/show", json={"model": model})).raise_for_status()
    info: dict[str, Any] = answer.json().get("model_info") or {}
    lengths = [v for k, v in info.items() if k.endswith(".context_length")]
    return (int(lengths[0]), "Ollama /api/show context_length") if lengths else None


async def _vllm(
    client: httpx.AsyncClient, root: str, base: str, model: str
) -> tuple[int, str] | None:
    models = (await client.get(f"{base}/models")).raise_for_status().json().get("data") or []
    mine = [m for m in models if m.get("id") == model] or models
    lengths = [m["max_model_len"] for m in mine if m.get("max_model_len")]
    return (int(lengths[0]), "vLLM /v1/models max_model_len") if lengths else None


def render(report: CheckReport) -> str:
    """Return the report as the lines of one screen."""
    lines = [f"LLM server: {report.url}  model: {report.model}", "structured-output ways:"]
    for p in report.probes:
        if p.ok:
            used = f"{p.completion_tokens} completion tokens" if p.completion_tokens else "no usage"
            lines.append(f"  {p.method:<12} works     {p.seconds:.2f}s, {used}")
        else:
            lines.append(f"  {p.method:<12} failed    {brief_text(p.why, 140)}")
    if report.chosen is None:
        lines.append(f"no way works as configured: {report.why}")
    else:
        lines.append(f"uses {report.chosen}: {report.why}")
        lines.extend(_sample_lines(next(p for p in report.probes if p.method == report.chosen)))
    if report.context is None:
        lines.append("context size: not reported by the server")
    else:
        size, source = report.context
        lines.append(f"context size: {size} tokens ({source})")
    return "\n".join(lines)


def _sample_lines(chosen: Probe) -> list[str]:
    lines = []
    if chosen.sample is not None:
        sample = json.dumps(chosen.sample.model_dump())
        lines.append(f"sample answer: {brief_text(sample, 160)}")
    if chosen.completion_tokens:
        per_token = chosen.seconds / chosen.completion_tokens * 1000
        lines.append(
            f"latency per token: {per_token:.1f} ms "
            f"({chosen.completion_tokens} completion tokens in {chosen.seconds:.2f}s)"
        )
    else:
        lines.append("latency per token: unknown (the server reported no usage)")
    return lines
