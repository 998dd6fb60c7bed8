"""A local OpenAI-compatible chat server for tests: real HTTP, answers set by the test.

``Behaviour.profile`` picks which documented server it plays (docs/AGENTS.md, "LLM servers"):
which ``response_format`` types it takes and how it refuses the others, whether it calls
tools, and where it reports its context size:

    openai            json_schema, json_object (the word "json" must be in the messages), tools
    vllm              json_schema, json_object, tools; ``GET /v1/models`` has max_model_len
    ollama            json_schema, json_object, tools; ``POST /api/show`` has the context length
    llama_cpp_python  json_schema answered 500 ``Input should be 'text' or 'json_object'``;
                      json_object with ``schema``; tools
    llama_server      json_schema, json_object with ``schema``, tools; ``GET /props`` has n_ctx
    lmstudio          json_schema; json_object answered 400; tools

Besides: ``max_tokens`` is honoured (a longer answer is cut, finish_reason "length"),
``finish_reason``/``text`` force a cut answer, ``serial`` serves one request at a time (the
others wait; ``max_in_flight`` counts how many were open at once), ``token_delay`` spends
that long per completion token and stops when the client hangs up (``aborted``), and
``usage`` is honest: about one token per 4 characters, as sent and as answered.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from sandbox.thread import AppThread

LLAMA_CPP_PYTHON_REFUSAL = (
    "1 validation error for CreateChatCompletionRequest\nresponse_format.type\n"
    "  Input should be 'text' or 'json_object' [type=literal_error, "
    "input_value='json_schema', input_type=str]"
)


@dataclass(frozen=True)
class Profile:
    """What one server takes: response_format types, tools, and how it refuses."""

    formats: frozenset[str]
    refusal: tuple[int, str]
    tools: bool = True
    json_word_needed: bool = False


_OPENAI_REFUSAL = (400, "Invalid parameter: 'response_format' of type {type} is not supported.")
PROFILES: dict[str, Profile] = {
    "openai": Profile(
        frozenset({"text", "json_schema", "json_object"}), _OPENAI_REFUSAL, json_word_needed=True
    ),
    "vllm": Profile(frozenset({"text", "json_schema", "json_object"}), _OPENAI_REFUSAL),
    "ollama": Profile(frozenset({"text", "json_schema", "json_object"}), _OPENAI_REFUSAL),
    "llama_cpp_python": Profile(
        frozenset({"text", "json_object"}), (500, LLAMA_CPP_PYTHON_REFUSAL)
    ),
    "llama_server": Profile(
        frozenset({"text", "json_schema", "json_object"}),
        (500, 'response_format type must be one of "text" or "json_object", but got: {type}'),
    ),
    "lmstudio": Profile(
        frozenset({"text", "json_schema"}),
        (400, "'response_format.type' must be 'json_schema' or 'text'"),
    ),
}
CONTEXT = 8192


@dataclass
class Behaviour:
    """What the next answers look like: ``ok`` with ``content``, ``slow``, ``429``.

    ``finish_reason`` is what every answer reports; ``length`` is a server that stopped at
    its token limit, and with it ``text`` (when set) replaces the JSON content, as a cut
    answer would. ``by_schema`` answers by the name of the schema asked for.
    """

    mode: str = "ok"
    content: dict[str, Any] = field(default_factory=dict)
    by_schema: dict[str, dict[str, Any]] = field(default_factory=dict)
    delay: float = 0.0
    finish_reason: str = "stop"
    text: str | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    profile: str = "openai"
    serial: bool = False
    token_delay: float = 0.0
    usage: bool = True
    in_flight: int = 0
    max_in_flight: int = 0
    aborted: int = 0
    _lock: asyncio.Lock | None = None


def tokens(text: str) -> int:
    """Return the tokens the server counts for ``text`` (one per 4 characters, at least 1)."""
    return max(1, math.ceil(len(text) / 4))


def _error(status: int, message: str) -> web.Response:
    kind = "internal_server_error" if status >= 500 else "invalid_request_error"
    return web.json_response({"error": {"message": message, "type": kind}}, status=status)


def _schema_name(body: dict[str, Any], behaviour: Behaviour) -> str:
    form = body.get("response_format") or {}
    if form.get("type") == "json_schema":
        return str(form.get("json_schema", {}).get("name", ""))
    if isinstance(form.get("schema"), dict) and "title" in form["schema"]:
        return str(form["schema"]["title"])
    if body.get("tools"):
        return str(body["tools"][0]["function"]["name"])
    said = " ".join(str(m.get("content", "")) for m in body.get("messages", []))
    return next((name for name in behaviour.by_schema if name in said), "")


def _refused(body: dict[str, Any], profile: Profile) -> web.Response | None:
    kind = (body.get("response_format") or {}).get("type", "text")
    if kind not in profile.formats:
        status, message = profile.refusal
        return _error(status, message.format(type=kind))
    if body.get("tools") and not profile.tools:
        return _error(400, "this model does not support tools")
    said = json.dumps(body.get("messages", [])).lower()
    if kind == "json_object" and profile.json_word_needed and "json" not in said:
        return _error(
            400,
            "'messages' must contain the word 'json' in some form, to use 'response_format' "
            "of type 'json_object'.",
        )
    return None


def _answer_text(body: dict[str, Any], behaviour: Behaviour) -> str:
    if behaviour.text is not None:
        return behaviour.text
    content = behaviour.by_schema.get(_schema_name(body, behaviour), behaviour.content)
    text = json.dumps(content)
    plain = not body.get("response_format") and not body.get("tools")
    # a model asked for JSON in the prompt alone often fences it, with a word around it
    return f"Here it is:\n```json\n{text}\n```" if plain else text


def _message(body: dict[str, Any], text: str) -> dict[str, Any]:
    if body.get("tools"):
        name = body["tools"][0]["function"]["name"]
        call = {"id": "call_1", "type": "function", "function": {"name": name, "arguments": text}}
        return {"role": "assistant", "content": None, "tool_calls": [call]}
    return {"role": "assistant", "content": text, "refusal": None}


async def _generate(request: web.Request, behaviour: Behaviour, count: int) -> bool:
    """Spend ``token_delay`` per token; return False when the client hung up (work stopped)."""
    if behaviour.token_delay <= 0:
        return True
    for _ in range(count):
        transport = request.transport
        if transport is None or transport.is_closing():
            behaviour.aborted += 1
            return False
        await asyncio.sleep(behaviour.token_delay)
    return True


def _completion(body: dict[str, Any], behaviour: Behaviour) -> tuple[dict[str, Any], int]:
    text = _answer_text(body, behaviour)
    finish = behaviour.finish_reason
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if limit and tokens(text) > limit:
        text, finish = text[: limit * 4], "length"
    if finish == "stop" and body.get("tools"):
        finish = "tool_calls"
    said = "".join(str(m.get("content", "")) for m in body.get("messages", []))
    completion = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "test"),
        "choices": [
            {
                "index": 0,
                "finish_reason": finish,
                "logprobs": None,
                "message": _message(body, text),
            }
        ],
    }
    used = tokens(text)
    if behaviour.usage:
        prompt = tokens(said)
        completion["usage"] = {
            "prompt_tokens": prompt,
            "completion_tokens": used,
            "total_tokens": prompt + used,
        }
    return completion, used


async def _serve(request: web.Request, body: dict[str, Any], behaviour: Behaviour) -> web.Response:
    if behaviour.mode == "429":
        return web.json_response(
            {
                "error": {
                    "message": "Rate limit reached",
                    "type": "requests",
                    "code": "rate_limit_exceeded",
                }
            },
            status=429,
            headers={"Retry-After": "7"},
        )
    refused = _refused(body, PROFILES[behaviour.profile])
    if refused is not None:
        return refused
    if behaviour.mode == "slow":
        await asyncio.sleep(behaviour.delay)
    completion, count = _completion(body, behaviour)
    if not await _generate(request, behaviour, count):
        return web.Response(status=499)
    return web.json_response(completion)


def _add_info_routes(app: web.Application, behaviour: Behaviour) -> None:
    """Add where each server reports its context size (only its own profile answers)."""

    async def models(request: web.Request) -> web.Response:
        model: dict[str, Any] = {"id": "test-model", "object": "model", "owned_by": "test"}
        if behaviour.profile == "vllm":
            model["max_model_len"] = CONTEXT
        return web.json_response({"object": "list", "data": [model]})

    async def props(request: web.Request) -> web.Response:
        if behaviour.profile != "llama_server":
            raise web.HTTPNotFound()
        return web.json_response({"default_generation_settings": {"n_ctx": CONTEXT}})

    async def show(request: web.Request) -> web.Response:
        if behaviour.profile != "ollama":
            raise web.HTTPNotFound()
        info = {"general.architecture": "llama", "llama.context_length": CONTEXT}
        return web.json_response({"model_info": info})

    app.router.add_get("/v1/models", models)
    app.router.add_get("/props", props)
    app.router.add_post("/api/show", show)


def make_app(behaviour: Behaviour) -> web.Application:
    """Return the aiohttp app serving POST /v1/chat/completions and the info routes."""

    async def completions(request: web.Request) -> web.Response:
        body = await request.json()
        behaviour.requests.append(body)
        behaviour.in_flight += 1
        behaviour.max_in_flight = max(behaviour.max_in_flight, behaviour.in_flight)
        try:
            if behaviour.serial:
                behaviour._lock = behaviour._lock or asyncio.Lock()
                async with behaviour._lock:
                    return await _serve(request, body, behaviour)
            return await _serve(request, body, behaviour)
        finally:
            behaviour.in_flight -= 1

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    _add_info_routes(app, behaviour)
    return app


class FakeOpenAI:
    """Run the fake server in a thread; ``url`` is its OpenAI base_url."""

    def __init__(self, profile: str = "openai", **behaviour: Any) -> None:
        self.behaviour = Behaviour(profile=profile, **behaviour)
        self._thread = AppThread(make_app(self.behaviour))

    @property
    def url(self) -> str:
        """Return the base_url clients use (with the /v1 prefix)."""
        return f"{self._thread.url}/v1"

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.stop()
