"""A local OpenAI-compatible chat server for tests: real HTTP, answers set by the test."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from sandbox.thread import AppThread


@dataclass
class Behaviour:
    """What the next answers look like: ``ok`` with ``content``, ``slow``, ``429``.

    ``finish_reason`` is what every answer reports; ``length`` is a server that stopped at
    its token limit, and with it ``text`` (when set) replaces the JSON content, as a cut
    answer would.
    """

    mode: str = "ok"
    content: dict[str, Any] = field(default_factory=dict)
    by_schema: dict[str, dict[str, Any]] = field(default_factory=dict)
    delay: float = 0.0
    finish_reason: str = "stop"
    text: str | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)


def make_app(behaviour: Behaviour) -> web.Application:
    """Return the aiohttp app serving POST /v1/chat/completions."""

    async def completions(request: web.Request) -> web.Response:
        body = await request.json()
        behaviour.requests.append(body)
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
        if behaviour.mode == "slow":
            await asyncio.sleep(behaviour.delay)
        schema = body.get("response_format", {}).get("json_schema", {}).get("name", "")
        content = behaviour.by_schema.get(schema, behaviour.content)
        text = json.dumps(content) if behaviour.text is None else behaviour.text
        return web.json_response(
            {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "test"),
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": behaviour.finish_reason,
                        "logprobs": None,
                        "message": {
                            "role": "assistant",
                            "content": text,
                            "refusal": None,
                        },
                    }
                ],
                "usage": {"prompt_tokens": 50, "completion_tokens": 20, "total_tokens": 70},
            }
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    return app


class FakeOpenAI:
    """Run the fake server in a thread; ``url`` is its OpenAI base_url."""

    def __init__(self) -> None:
        self.behaviour = Behaviour()
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
