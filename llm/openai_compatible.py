"""langchain-openai's ChatOpenAI behind the agents' LLMPort, through the shared limiter.

Model, base_url, key, timeout and the answer's ``max_tokens`` come from the ``llm`` config,
so OpenAI or any OpenAI-compatible server (vLLM, Ollama, llama.cpp, LM Studio) works. One
call, in order:

1. ``llm.budget_per_day`` (llm/usage.py): spent, the call is not made (LLMBudgetError);
2. the fleet limiter admits it (requests and tokens per minute, pools of the ``llm`` table);
3. with ``llm.max_concurrency``, a fleet-wide slot is taken (llm/slots.py);
4. the answer is asked for the ``llm.structured_output`` way (llm/methods.py); with ``auto``
   a way the server refuses is remembered and the next is tried within the same call;
5. the server's reported usage, the time and the outcome are recorded (llm/usage.py).

Steps 2 to 4 share one deadline, ``llm.timeout`` from the start of the call: waiting for
budget or a slot leaves less time to answer. At the deadline the request is cancelled, which
closes its connection: llama.cpp and vLLM stop generating for a closed connection. An answer
the server cut at its token limit (``finish_reason`` "length") is an LLMLengthError for every
way, not only those where openai raises LengthFinishReasonError itself.

This is the edge where the vendor's exceptions become the project's: every reason the call
gives no usable answer is raised as one of the ``LLMError`` family (agents/llm.py) with
``raise ... from exc``, so the ladder falls to the next rung and names the original. A
TypeError or other bug in our use of the client is not translated and raises as it is.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import openai
from langchain_core.exceptions import OutputParserException
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, ValidationError

from agents.llm import (
    LLMAnswerError,
    LLMBudgetError,
    LLMError,
    LLMLengthError,
    LLMThrottledError,
    LLMTimeoutError,
    LLMUnavailableError,
    brief,
)
from core.config import LLMConfig, estimated_prompt_tokens
from core.errors import BackOffError
from core.events import emit
from core.redact import scrub_exception
from core.tracing import span
from llm import methods, usage
from llm.methods import MEMORY, LLMRefusedError, Memory, Method, Reply
from llm.slots import Slots
from ratelimit.manager import ExchangeRateLimitManager
from ratelimit.pools import Priority

T = TypeVar("T", bound=BaseModel)
log = logging.getLogger(__name__)


def estimate_tokens(system: str, user: str, config: LLMConfig) -> int:
    """Return the tokens one call charges the budget: its messages plus the answer's limit."""
    return estimated_prompt_tokens(len(system) + len(user)) + config.answer_tokens()


class Answer(NamedTuple):
    """One answer: the value, the way it was asked for, the server's usage and the time."""

    value: BaseModel
    method: Method
    prompt_tokens: int | None
    completion_tokens: int | None
    seconds: float


@dataclass
class _Usage:
    prompt: int | None = None
    completion: int | None = None


class OpenAICompatibleLLM:
    """Ask an OpenAI-compatible chat model for structured answers."""

    def __init__(
        self,
        config: LLMConfig,
        limiter: ExchangeRateLimitManager | None = None,
        memory: Memory = MEMORY,
    ) -> None:
        self.config, self.limiter, self.memory = config, limiter, memory
        key = config.api_key.get_secret_value() if config.api_key else "not-needed"
        self._chat = ChatOpenAI(
            model=config.model,
            base_url=config.base_url,
            api_key=key,
            timeout=config.timeout,
            max_retries=0,
            temperature=config.temperature,
            max_tokens=config.max_tokens,
        )
        self._slots = (
            Slots.for_limiter(config.max_concurrency, limiter) if config.max_concurrency else None
        )
        self.calls = 0
        self.tokens = 0

    async def complete(self, schema: type[T], system: str, user: str) -> T:
        """Return the model's answer as ``schema``; raise an LLMError when there is none."""
        usage.check_daily_budget(self.config)
        deadline = asyncio.get_running_loop().time() + self.config.timeout
        estimate = estimate_tokens(system, user, self.config)
        await self._admit(estimate)
        self.calls += 1
        self.tokens += estimate
        with span(
            "llm.call", model=self.config.model, schema=schema.__name__, tokens_estimated=estimate
        ):
            async with self._slot(deadline):
                answer = await self._answer(schema, system, user, deadline)
        if not isinstance(answer.value, schema):
            raise LLMAnswerError(
                f"the LLM answered {type(answer.value).__name__}, not {schema.__name__}"
            )
        return answer.value

    def _slot(self, deadline: float) -> AbstractAsyncContextManager[Any]:
        return self._slots.held(deadline) if self._slots is not None else nullcontext()

    async def _admit(self, estimate: int) -> None:
        """Wait until the fleet's LLM budget admits the call; raise LLMBudgetError if it won't."""
        if self.limiter is None:
            return
        try:
            await self.limiter.acquire_async(
                "llm",
                "chat",
                weight=estimate,
                priority=Priority.MEDIUM,
                max_wait=self.config.timeout,
            )
        except BackOffError as exc:
            # nothing was sent, so nothing was spent: the call counts with no tokens
            emit("llm.call", model=self.config.model, outcome=type(exc).__name__, tokens=0)
            raise LLMBudgetError(f"{brief(exc)} (this call: about {estimate} tokens)") from exc

    async def _answer(self, schema: type[T], system: str, user: str, deadline: float) -> Answer:
        """Return the answer of the first way the server does not refuse (auto falls down)."""
        ways = self.memory.candidates(self.config)
        for index, method in enumerate(ways):
            try:
                return await self.ask(schema, system, user, method, deadline)
            except LLMRefusedError as exc:
                if index == len(ways) - 1:
                    raise
                self.memory.refuse(self.config, method, brief(exc))
                log.warning(
                    "the LLM server %s refused %s (%s); asking the %s way from now on",
                    self.config.base_url,
                    method,
                    brief(exc),
                    ways[index + 1],
                )
        raise AssertionError("no structured-output way to try")  # candidates is never empty

    async def ask(
        self, schema: type[T], system: str, user: str, method: Method, deadline: float
    ) -> Answer:
        """Return the answer asked for the ``method`` way, without budget, limiter or slot.

        Records the call's usage and outcome; ``deadline`` is on the running loop's clock.
        """
        loop = asyncio.get_running_loop()
        start, seen, outcome = loop.time(), _Usage(), "ok"
        try:
            value = await self._ask_once(schema, system, user, method, deadline - start, seen=seen)
        except BaseException as exc:
            outcome = type(exc).__name__
            raise
        finally:
            seconds = loop.time() - start
            self._record(method, seen, seconds, outcome)
        return Answer(value, method, seen.prompt, seen.completion, seconds)

    def _record(self, method: Method, seen: _Usage, seconds: float, outcome: str) -> None:
        usage.record_call(
            self.config,
            model=self.config.model,
            method=method,
            prompt_tokens=seen.prompt,
            completion_tokens=seen.completion,
            seconds=seconds,
            outcome=outcome,
        )
        tokens = (seen.prompt or 0) + (seen.completion or 0)
        emit("llm.call", model=self.config.model, method=method, outcome=outcome, tokens=tokens)

    async def _ask_once(
        self,
        schema: type[T],
        system: str,
        user: str,
        method: Method,
        seconds: float,
        *,
        seen: _Usage,
    ) -> BaseModel:
        if seconds <= 0:
            raise LLMTimeoutError(self._timed_out())
        asked = methods.runnable(self._chat, method, schema)
        chat = methods.messages(method, schema, system, user)
        try:
            output = await asyncio.wait_for(asked.ainvoke(chat), seconds)
        except openai.LengthFinishReasonError as exc:
            seen.prompt, seen.completion = methods.completion_usage(exc)
            raise self._translate(exc) from scrub_exception(exc)
        except openai.OpenAIError as exc:
            # the openai exception quotes the request (and an echoed key): kept scrubbed
            refused = methods.refusal(method, exc)
            if refused is not None:
                raise LLMRefusedError(f"{method} refused: {refused}") from scrub_exception(exc)
            raise self._translate(exc) from scrub_exception(exc)
        except TimeoutError as exc:
            raise LLMTimeoutError(self._timed_out()) from exc
        except (ValidationError, OutputParserException, ValueError) as exc:
            raise _unusable(exc) from scrub_exception(exc)
        got = methods.reply(method, schema, output)
        seen.prompt, seen.completion = methods.usage(got.raw)
        return self._value(got, method)

    def _value(self, got: Reply, method: Method) -> BaseModel:
        """Return the parsed answer; raise LLMLengthError or LLMAnswerError when there is none."""
        if methods.finish_reason(got.raw) == "length":
            raise LLMLengthError(self._cut())
        if isinstance(got.error, LLMError):
            raise got.error
        if got.error is not None:
            raise _unusable(got.error) from scrub_exception(got.error)
        if got.parsed is None:
            missing = "called no function" if method == "tool_call" else "gave no answer"
            raise LLMAnswerError(f"the LLM {missing}")
        return got.parsed

    def _timed_out(self) -> str:
        return f"the LLM did not answer within {self.config.timeout:g}s"

    def _cut(self) -> str:
        limit = self.config.max_tokens or "the server's"
        return f"the answer was cut at the length limit ({limit} tokens)"

    def _translate(self, exc: openai.OpenAIError) -> LLMError:
        """Return the LLMError that says why openai's exception left no answer."""
        # subclasses before their bases: APITimeoutError is an APIConnectionError, and
        # RateLimitError an APIStatusError
        family: type[LLMError] = LLMError
        message = f"the LLM call failed: {brief(exc)}"
        if isinstance(exc, openai.RateLimitError):
            retry_after = _retry_after(exc)
            if self.limiter is not None:
                self.limiter.report_throttle("llm", 429, retry_after)
            family = LLMThrottledError
            message = f"the LLM provider answered 429 (retry after {retry_after})"
        elif isinstance(exc, openai.APITimeoutError):
            family, message = LLMTimeoutError, self._timed_out()
        elif isinstance(exc, openai.LengthFinishReasonError):
            family, message = LLMLengthError, self._cut()
        elif isinstance(exc, openai.ContentFilterFinishReasonError):
            family, message = LLMAnswerError, "the provider's content filter refused the answer"
        elif isinstance(exc, openai.APIResponseValidationError):
            family = LLMAnswerError
            message = f"the provider's response was malformed: {brief(exc)}"
        elif isinstance(exc, openai.APIConnectionError):
            family = LLMUnavailableError
            message = f"the LLM provider cannot be reached: {brief(exc)}"
        elif isinstance(exc, openai.APIStatusError):
            family = LLMUnavailableError
            message = f"the LLM provider answered {exc.status_code}: {brief(exc)}"
        return family(message)


def _unusable(exc: BaseException) -> LLMError:
    """Return the error for an answer that did not parse or fit (the answer's fault)."""
    return LLMAnswerError(f"the LLM answer was unusable: {brief(exc)}")


def _retry_after(exc: openai.RateLimitError) -> float | None:
    try:
        return float(exc.response.headers.get("retry-after", ""))
    except (ValueError, AttributeError):
        return None
