"""What a task may use from its process: the config and clients, installed by the worker.

Tasks sit below ``workers`` in the import layers, so they cannot import the composition
root; ``workers.app`` installs its runtime here when the app module is imported, and tasks
ask :func:`current` for it when they run. The first task that does also makes the process
count its LLM usage in the fleet's Redis (``llm/usage.py``), through the runtime's client: a
process that only imported the app (a test, a CLI command) never connects for it.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, Protocol, TypeVar

import aiohttp
import redis

from agents.llm import LLMPort
from core.config import AppConfig
from core.keys import KeySpace
from llm import usage
from resilience import ResilientAPIClient

T = TypeVar("T")


class Runtime(Protocol):
    """The per-process services a task can use."""

    def config(self) -> AppConfig:
        """Return the validated configuration."""
        ...

    def redis_client(self) -> redis.Redis:
        """Return this process's Redis client."""
        ...

    def keyspace(self) -> KeySpace:
        """Return the key builder."""
        ...

    def exchange_client(self) -> ResilientAPIClient:
        """Return this process's resilient exchange client."""
        ...

    def http_session(self) -> aiohttp.ClientSession:
        """Return this process's pooled HTTP session for news sources (on its event loop)."""
        ...

    def llm(self) -> LLMPort | None:
        """Return the configured LLM, or None for rule-based agents."""
        ...

    def run_async(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the process's event loop and return its result.

        A coroutine still running when ``timeout`` passes, or when the caller is interrupted
        (Celery's soft time limit), is cancelled before this raises (``TimeoutError`` for the
        timeout): it never acts after its task has failed.
        """
        ...


_installed: list[Runtime] = []
#: The runtime whose Redis counts this process's LLM usage, once a task has asked for it.
_counting: list[Runtime] = []


def install(runtime: Runtime) -> None:
    """Make ``runtime`` the one tasks in this process use."""
    _installed[:] = [runtime]
    _counting.clear()


def current() -> Runtime:
    """Return the installed runtime; tasks run only in a process that installed one."""
    if not _installed:
        raise RuntimeError("no runtime installed: tasks must run inside the workers app")
    runtime = _installed[0]
    if not _counting:
        # callables, not clients: a forked worker process builds its own client
        usage.install(usage.RedisUsage(runtime.redis_client, runtime.keyspace))
        _counting.append(runtime)
    return runtime
