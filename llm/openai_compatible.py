"""langchain-openai's ChatOpenAI behind the agents' LLMPort, through the shared limiter.

Model, base_url, key, timeout and the answer's ``max_tokens`` come from the ``llm`` config,
so OpenAI or any OpenAI-compatible server (vLLM, Ollama, llama.cpp) works. Every call is
admitted by the fleet limiter (requests and tokens per minute, pools of the ``llm`` table)
and has a timeout; a 429 from the provider starts a fleet-wide cooldown. Answers are asked
for with structured output (``json_schema``) and must parse into the schema.

This is the edge where the vendor's exceptions become the project's: every reason the call
gives no usable answer is raised as one of the ``LLMError`` family (agents/llm.py) with
``raise ... from exc``, so the ladder falls to the next rung and names the original. A
TypeError or other bug in our use of the client is not translated and raises as it is.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

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
from ratelimit.manager import ExchangeRateLimitManager
from ratelimit.pools import Priority

T = TypeVar("T", bound=BaseModel)


def estimate_tokens(system: str, user: str, config: LLMConfig) -> int:
    """Return the tokens one call charges the budget: its messages plus the answer's limit."""
    return estimated_prompt_tokens(len(system) + len(user)) + config.answer_tokens()


class OpenAICompatibleLLM:
    """Ask an OpenAI-compatible chat model for structured answers."""

    def __init__(
        self,
        config: LLMConfig,
        limiter: ExchangeRateLimitManager | None = None,
        method: str = "json_schema",
    ) -> None:
        self.config, self.limiter, self.method = config, limiter, method
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
        self.calls = 0
        self.tokens = 0

    async def complete(self, schema: type[T], system: str, user: str) -> T:
        """Return the model's answer as ``schema``; raise an LLMError when there is none."""
        estimate = estimate_tokens(system, user, self.config)
        await self._admit(estimate)
        self.calls += 1
        self.tokens += estimate
        try:
            with span(
                "llm.call",
                model=self.config.model,
                schema=schema.__name__,
                tokens_estimated=estimate,
            ):
                answer = await self._invoke(schema, system, user)
        except LLMError as exc:
            cause = type(exc.__cause__).__name__ if exc.__cause__ else type(exc).__name__
            emit("llm.call", model=self.config.model, outcome=cause, tokens=estimate)
            raise
        emit("llm.call", model=self.config.model, outcome="ok", tokens=estimate)
        return answer

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

    async def _invoke(self, schema: type[T], system: str, user: str) -> T:
        runnable: Any = self._chat.with_structured_output(schema, method=self.method)  # type: ignore[arg-type]
        try:
            answer = await asyncio.wait_for(
                runnable.ainvoke([("system", system), ("human", user)]), self.config.timeout
            )
        except openai.OpenAIError as exc:
            # the openai exception quotes the request (and an echoed key): kept scrubbed
            raise self._translate(exc) from scrub_exception(exc)
        except TimeoutError as exc:
            raise LLMTimeoutError(
                f"the LLM did not answer within {self.config.timeout:g}s"
            ) from exc
        except (ValidationError, OutputParserException, ValueError) as exc:
            # the answer did not parse or fit (pydantic, JSON and langchain's parser errors
            # are ValueErrors); raised inside the vendor call, so it is the answer's fault
            raise LLMAnswerError(f"the LLM answer was unusable: {brief(exc)}") from (
                scrub_exception(exc)
            )
        if not isinstance(answer, schema):
            raise LLMAnswerError(f"the LLM answered {type(answer).__name__}, not {schema.__name__}")
        return answer

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
            family = LLMTimeoutError
            message = f"the LLM did not answer within {self.config.timeout:g}s"
        elif isinstance(exc, openai.LengthFinishReasonError):
            family = LLMLengthError
            limit = self.config.max_tokens or "the server's"
            message = f"the answer was cut at the length limit ({limit} tokens)"
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


def _retry_after(exc: openai.RateLimitError) -> float | None:
    try:
        return float(exc.response.headers.get("retry-after", ""))
    except (ValueError, AttributeError):
        return None
