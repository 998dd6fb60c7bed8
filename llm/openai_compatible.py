"""langchain-openai's ChatOpenAI behind the agents' LLMPort, through the shared limiter.

Model, base_url, key and timeout come from the ``llm`` config, so OpenAI or any
OpenAI-compatible server (vLLM, Ollama, llama.cpp) works. Every call is admitted by the
fleet limiter (requests and tokens per minute, pools of the ``llm`` table) and has a
timeout; a 429 from the provider starts a fleet-wide cooldown. Answers are asked for with
structured output (``json_schema``) and must parse into the schema, or the call is an
LLMError and the ladder falls to the next rung.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import openai
from langchain_core.exceptions import OutputParserException
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, ValidationError

from agents.llm import LLMError
from core.config import LLMConfig
from core.events import emit
from core.tracing import span
from ratelimit.manager import ExchangeRateLimitManager
from ratelimit.pools import Priority

T = TypeVar("T", bound=BaseModel)

#: Tokens an answer may use, added to the prompt's estimate when charging the budget.
ANSWER_TOKENS = 600


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
        )
        self.calls = 0
        self.tokens = 0

    async def complete(self, schema: type[T], system: str, user: str) -> T:
        """Return the model's answer as ``schema``; raise LLMError when there is none."""
        estimate = (len(system) + len(user)) // 4 + ANSWER_TOKENS
        if self.limiter is not None:
            await self.limiter.acquire_async(
                "llm",
                "chat",
                weight=estimate,
                priority=Priority.MEDIUM,
                max_wait=self.config.timeout,
            )
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
            cause = type(exc.__cause__).__name__ if exc.__cause__ else "LLMError"
            emit("llm.call", model=self.config.model, outcome=cause, tokens=estimate)
            raise
        emit("llm.call", model=self.config.model, outcome="ok", tokens=estimate)
        return answer

    async def _invoke(self, schema: type[T], system: str, user: str) -> T:
        runnable: Any = self._chat.with_structured_output(schema, method=self.method)  # type: ignore[arg-type]
        try:
            answer = await asyncio.wait_for(
                runnable.ainvoke([("system", system), ("human", user)]), self.config.timeout
            )
        except openai.RateLimitError as exc:
            retry_after = _retry_after(exc)
            if self.limiter is not None:
                self.limiter.report_throttle("llm", 429, retry_after)
            raise LLMError(f"the LLM provider answered 429 (retry after {retry_after})") from exc
        except (openai.APITimeoutError, TimeoutError) as exc:
            raise LLMError(f"the LLM did not answer within {self.config.timeout:g}s") from exc
        except (openai.APIError, ValidationError, OutputParserException, ValueError) as exc:
            raise LLMError(f"the LLM answer was unusable: {type(exc).__name__}: {exc}") from exc
        if not isinstance(answer, schema):
            raise LLMError(f"the LLM answered {type(answer).__name__}, not {schema.__name__}")
        return answer


def _retry_after(exc: openai.RateLimitError) -> float | None:
    try:
        return float(exc.response.headers.get("retry-after", ""))
    except (ValueError, AttributeError):
        return None
