"""How an answer of a schema is asked for, one way per server family, and how it is read back.

``llm.structured_output`` names the way (docs/AGENTS.md, "LLM servers", cites each server's
documentation):

    json_schema   ``response_format: {"type": "json_schema", "json_schema": {"name", "schema",
                  "strict"}}``: OpenAI, vLLM, LM Studio, Ollama's ``/v1``, llama-server
    json_object   ``response_format: {"type": "json_object", "schema": {...}}``: the form of
                  llama-cpp-python and llama-server (a grammar built from the schema); the
                  schema is in the prompt too, for servers that take ``json_object`` alone
    tool_call     one function whose parameters are the schema, forced with ``tool_choice``
    prompt        no ``response_format``: the schema in the system prompt, and the JSON read
                  from the answer's text (code fences and prose around it stripped)

``auto`` tries them in that order. A server that refuses a way (an HTTP 400/422/500 naming
the response format, or tools it does not support) raises :class:`LLMRefusedError`, and the
adapter falls to the next way and remembers it for that server and model (:class:`Memory`).
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, get_args

import openai
from langchain_core.messages import AIMessage
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from agents.llm import LLMAnswerError, LLMUnavailableError, brief
from core.config import LLMConfig

Method = Literal["json_schema", "json_object", "tool_call", "prompt"]
#: The order ``auto`` tries the ways in: the strictest the server honours first.
AUTO_ORDER: tuple[Method, ...] = get_args(Method)

#: Status codes with which servers refuse a request form they do not take (llama-cpp-python
#: answers 500 for a ``response_format`` type it does not know; vLLM and Ollama 400; a
#: proxy validating the body 422).
REFUSAL_STATUSES = frozenset({400, 404, 422, 500, 501})
_FORMAT_WORDS = (
    "response_format",
    "response format",
    "json_schema",
    "json_object",
    "'text' or",
    "structured output",
    "grammar",
)
_TOOL_WORDS = ("tool", "function")


class LLMRefusedError(LLMUnavailableError):
    """The server refused the way the answer was asked for (its response format or tools)."""

    kind = "llm refused the structured-output method"


class Reply(NamedTuple):
    """One answer as the server gave it: the message (None if none) and the parsed value."""

    raw: AIMessage | None
    parsed: BaseModel | None
    error: BaseException | None


def schema_json(schema: type[BaseModel]) -> str:
    """Return the schema's JSON Schema as compact text."""
    return json.dumps(schema.model_json_schema(), separators=(",", ":"))


def instructions(schema: type[BaseModel]) -> str:
    """Return the system-prompt lines that ask for one JSON object of ``schema``."""
    return (
        f"\n\nAnswer with one JSON object of the schema named {schema.__name__} and nothing "
        f"else (no prose, no code fence). Its JSON Schema:\n{schema_json(schema)}"
    )


def messages(method: Method, schema: type[BaseModel], system: str, user: str) -> list[Any]:
    """Return the chat messages for ``method``: the schema in the prompt where it is needed."""
    if method in ("json_object", "prompt"):
        system += instructions(schema)
    return [("system", system), ("human", user)]


def runnable(chat: ChatOpenAI, method: Method, schema: type[BaseModel]) -> Any:
    """Return the runnable asking ``chat`` for ``schema`` the ``method`` way.

    json_schema and tool_call are langchain's own (``include_raw``: the message comes back
    with the parsed value); json_object and prompt return the message, read by :func:`read`.
    """
    if method == "json_schema":
        return chat.with_structured_output(schema, method="json_schema", include_raw=True)
    if method == "tool_call":
        return chat.with_structured_output(schema, method="function_calling", include_raw=True)
    if method == "json_object":
        form = {"type": "json_object", "schema": schema.model_json_schema()}
        return chat.bind(response_format=form)
    return chat


def reply(method: Method, schema: type[BaseModel], output: Any) -> Reply:
    """Return the message and the value of one answer (``output`` of :func:`runnable`)."""
    if isinstance(output, dict):
        raw = output.get("raw")
        return Reply(
            raw if isinstance(raw, AIMessage) else None,
            output.get("parsed"),
            output.get("parsing_error"),
        )
    if not isinstance(output, AIMessage):
        return Reply(None, None, LLMAnswerError(f"the LLM answered {type(output).__name__}"))
    try:
        return Reply(output, read(output.text, schema), None)
    except (ValueError, LLMAnswerError) as exc:  # a pydantic ValidationError is a ValueError
        return Reply(output, None, exc)


#: openai's prefix of a status error's message ("Error code: 500 - ...").
_STATUS_PREFIX = re.compile(r"^Error code: \d+ - ")
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)


def read(text: str, schema: type[BaseModel]) -> BaseModel:
    """Return the one JSON object in ``text`` as ``schema`` (fences and prose around it dropped).

    Raises LLMAnswerError when there is no JSON object, ValidationError when it does not fit.
    """
    fenced = _FENCE.search(text)
    body = fenced.group(1) if fenced else text
    start = body.find("{")
    if start < 0:
        raise LLMAnswerError(f"the LLM answer holds no JSON object: {brief_text(text)}")
    try:
        value, _ = json.JSONDecoder().raw_decode(body[start:])
    except json.JSONDecodeError as exc:
        raise LLMAnswerError(f"the LLM answer is not JSON: {exc}") from exc
    return schema.model_validate(value)


def brief_text(text: str, limit: int = 80) -> str:
    """Return ``text`` on one line, cut at ``limit`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def finish_reason(raw: AIMessage | None) -> str | None:
    """Return why the server stopped the answer (``stop``, ``length``, ``tool_calls``)."""
    if raw is None:
        return None
    reason = raw.response_metadata.get("finish_reason")
    return str(reason) if reason is not None else None


def usage(raw: AIMessage | None) -> tuple[int | None, int | None]:
    """Return the (prompt, completion) tokens the server reported, None where it reported none."""
    meta = raw.usage_metadata if raw is not None else None
    if not meta:
        return None, None
    return meta.get("input_tokens"), meta.get("output_tokens")


def completion_usage(exc: openai.LengthFinishReasonError) -> tuple[int | None, int | None]:
    """Return the usage a length-cut completion reported (openai keeps it on the error)."""
    reported = exc.completion.usage
    if reported is None:
        return None, None
    return reported.prompt_tokens, reported.completion_tokens


def refusal(method: Method, exc: openai.OpenAIError) -> str | None:
    """Return why the server refused ``method`` (one line), or None if ``exc`` is no refusal."""
    if not isinstance(exc, openai.APIStatusError) or exc.status_code not in REFUSAL_STATUSES:
        return None
    text = brief(exc).lower()
    words = _TOOL_WORDS if method == "tool_call" else _FORMAT_WORDS
    if method == "prompt" or not any(word in text for word in words):
        return None
    said = _STATUS_PREFIX.sub("", brief(exc))
    return f"HTTP {exc.status_code}: {brief_text(said, 160)}"


@dataclass
class Memory:
    """The ways each server refused and the one ``auto`` uses now, for this process.

    Keyed by server (``base_url``) and model: a server in front of several models may take a
    way for one and not another.
    """

    refused: dict[tuple[str, str], dict[Method, str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @staticmethod
    def server(config: LLMConfig) -> tuple[str, str]:
        """Return the key of the configured server and model."""
        return (config.base_url or "https://api.openai.com/v1", config.model)

    def candidates(self, config: LLMConfig) -> list[Method]:
        """Return the ways to try, in order: the configured one, or auto's not yet refused."""
        if config.structured_output != "auto":
            return [config.structured_output]
        refused = self.refused.get(self.server(config), {})
        left = [m for m in AUTO_ORDER if m not in refused]
        return left or ["prompt"]

    def refuse(self, config: LLMConfig, method: Method, reason: str) -> None:
        """Remember that the server refused ``method`` and why (``reason`` names the way)."""
        with self._lock:
            self.refused.setdefault(self.server(config), {})[method] = reason

    def choice(self, config: LLMConfig) -> tuple[Method, str]:
        """Return the way calls use now and why, in one line."""
        if config.structured_output != "auto":
            return config.structured_output, "configured (llm.structured_output)"
        method = self.candidates(config)[0]
        refused = self.refused.get(self.server(config), {})
        if not refused:
            return method, "the first way auto tries; the server has not refused it"
        return method, "auto: " + "; ".join(refused.values())

    def forget(self) -> None:
        """Forget every server's refusals (the next calls probe again)."""
        with self._lock:
            self.refused.clear()


#: This process's memory of what each server refused (probed by the first calls).
MEMORY = Memory()
