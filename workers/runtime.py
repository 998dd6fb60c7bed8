"""Per-process runtime: the configuration (loaded once) and clients built on first use.

Nothing here runs at import time. Celery's prefork pool forks workers after the parent has
started; :func:`reset_after_fork` (wired to ``worker_process_init``) drops clients inherited
from the parent so that no socket is shared between processes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import logging
import os
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import redis

from agents.llm import LLMPort
from core.config import AppConfig
from core.config_loader import load_config
from core.keys import KeySpace
from core.redact import register_config
from core.redis_target import external_redis_url, redact_url
from exchanges.http import pooled_session
from ratelimit.manager import ExchangeRateLimitManager
from resilience.client import ResilientAPIClient
from workers.redis_server import EmbeddedRedis, running_embedded

T = TypeVar("T")

log = logging.getLogger(__name__)

_lock = threading.RLock()
_state: dict[str, Any] = {}


def configure(config: AppConfig, redis_url: str | None = None) -> None:
    """Install a configuration (and optionally a Redis URL) for this process."""
    # its secrets join the redaction registry: every log line, error and result masks them
    register_config(config)
    with _lock:
        _state.clear()
        _state["config"] = config
        if redis_url is not None:
            _state["redis_url"] = redis_url


def config() -> AppConfig:
    """Return this process's configuration, loading it (and registering its secrets) once."""
    with _lock:
        if "config" not in _state:
            loaded = load_config()
            register_config(loaded)
            _state["config"] = loaded
        return _state["config"]  # type: ignore[no-any-return]


def keyspace() -> KeySpace:
    """Return the key builder for the configured prefix."""
    return KeySpace(config().redis.key_prefix)


def redis_url() -> str:
    """Return the URL of the fleet's Redis, starting the embedded server if none is set.

    Warning: with no Redis configured and no embedded server running for the configured
    directory, this starts one that outlives the process (stop it with
    ``crypto-ai redis stop``); ``crypto-ai up`` instead owns and stops its own server.
    """
    with _lock:
        if "redis_url" not in _state:
            _state["redis_url"] = _resolve_redis_url(config())
        return _state["redis_url"]  # type: ignore[no-any-return]


def _resolve_redis_url(cfg: AppConfig) -> str:
    url = external_redis_url(cfg.redis)
    if url is not None:
        return url
    directory = Path(cfg.redis.embedded.dir)
    running = running_embedded(directory)
    if running is not None:
        return running
    server = EmbeddedRedis(
        directory,
        appendonly=cfg.redis.embedded.appendonly,
        appendfsync=cfg.redis.embedded.appendfsync,
    )
    url = server.start()
    log.warning(
        "no Redis configured: started an embedded redis-server at %s (pid %s) that keeps "
        "running for other processes; stop it with `crypto-ai redis stop`",
        redact_url(url),
        server.pid,
    )
    return url


def redis_client() -> redis.Redis:
    """Return this process's Redis client (one connection pool per process)."""
    with _lock:
        if "redis" not in _state:
            _state["redis"] = make_redis_client(redis_url(), config())
        return _state["redis"]  # type: ignore[no-any-return]


def make_redis_client(url: str, cfg: AppConfig) -> redis.Redis:
    """Build a Redis client for ``url`` with the configured pool, timeouts and TLS."""
    pool = cfg.redis.connection_pool
    options: dict[str, Any] = {
        "max_connections": pool.max_connections,
        "socket_timeout": pool.socket_timeout,
        "socket_connect_timeout": pool.socket_connect_timeout,
        "retry_on_timeout": pool.retry_on_timeout,
        "health_check_interval": pool.health_check_interval,
        "decode_responses": False,
    }
    if url.startswith("rediss://"):
        options["ssl_cert_reqs"] = cfg.redis.ssl_cert_reqs
        if cfg.redis.ssl_ca_certs:
            options["ssl_ca_certs"] = str(cfg.redis.ssl_ca_certs)
    return redis.Redis.from_url(url, **options)


def rate_limiter() -> ExchangeRateLimitManager:
    """Return this process's view of the fleet-wide rate limiter."""
    with _lock:
        if "limiter" not in _state:
            _state["limiter"] = ExchangeRateLimitManager(redis_client(), config())
        return _state["limiter"]  # type: ignore[no-any-return]


def exchange_client() -> ResilientAPIClient:
    """Return this process's resilient exchange client (ccxt instances inside)."""
    with _lock:
        if "client" not in _state:
            _state["client"] = ResilientAPIClient(redis_client(), config(), limiter=rate_limiter())
        return _state["client"]  # type: ignore[no-any-return]


def http_session() -> aiohttp.ClientSession:
    """Return this process's pooled session for news sources (call it on the process's loop).

    One pool per process with ``performance.connection_pooling``'s size and timeouts, kept
    alive between tasks; rebuilt if the loop changed or the session was closed.
    """
    loop = id(asyncio.get_running_loop())
    with _lock:
        held = _state.get("http")
        if held is None or held[0] != loop or held[1].closed:
            _state["http"] = (loop, pooled_session(config().performance.connection_pooling))
        return _state["http"][1]  # type: ignore[no-any-return]


def llm() -> LLMPort | None:
    """Return this process's LLM client, or None when no LLM is configured."""
    with _lock:
        if "llm" not in _state:
            from llm.openai_compatible import OpenAICompatibleLLM  # langchain only when used

            cfg = config()
            _state["llm"] = (
                OpenAICompatibleLLM(cfg.llm, rate_limiter()) if cfg.llm.configured else None
            )
        return _state["llm"]  # type: ignore[no-any-return]


def event_loop() -> asyncio.AbstractEventLoop:
    """Return this process's event loop, running in a daemon thread.

    ccxt's async instances and their HTTP sessions belong to one loop; Celery tasks are
    synchronous, so every task of the process submits its coroutines to this one loop.
    """
    with _lock:
        if "loop" not in _state:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="crypto-ai-loop", daemon=True).start()
            _state["loop"] = loop
        return _state["loop"]  # type: ignore[no-any-return]


#: How long :func:`run_async` waits for a timed-out coroutine to finish its cancellation.
CANCEL_GRACE = 5.0


def run_async(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run a coroutine on the process's loop and return its result (for sync callers).

    The coroutine runs in the caller's context (contextvars), so the caller's trace span is
    the parent of the spans it opens. If the wait ends first (``timeout`` passed, or the
    caller's thread was interrupted, e.g. by Celery's soft time limit), the coroutine is
    cancelled and given up to ``CANCEL_GRACE`` seconds to unwind (its finally blocks release
    leases) before this raises: a task that timed out never acts afterwards.
    """
    loop = event_loop()
    context = contextvars.copy_context()
    done: concurrent.futures.Future[T] = concurrent.futures.Future()
    tasks: list[asyncio.Task[T]] = []

    def start() -> None:
        task = loop.create_task(coro, context=context)
        task.add_done_callback(lambda t: _settle(done, t))
        tasks.append(task)

    loop.call_soon_threadsafe(start)
    try:
        settled = _settled(done, timeout)
    except BaseException:  # interrupted while waiting: the coroutine must not outlive it
        _cancel(loop, tasks, done)
        raise
    if not settled:
        _cancel(loop, tasks, done)
        name = getattr(coro, "__qualname__", "coroutine")
        raise TimeoutError(f"{name} cancelled after {timeout:g}s: it had not finished")
    return done.result()


def _cancel(
    loop: asyncio.AbstractEventLoop,
    tasks: list[asyncio.Task[T]],
    done: concurrent.futures.Future[T],
) -> None:
    """Cancel the coroutine's task on its loop; wait up to CANCEL_GRACE for it to unwind."""
    # the loop runs callbacks in the order they were scheduled: start() has made the task
    loop.call_soon_threadsafe(lambda: [task.cancel() for task in tasks])
    if not _settled(done, CANCEL_GRACE):
        log.warning("%s still running %gs after it was cancelled", tasks, CANCEL_GRACE)


def _settled(done: concurrent.futures.Future[T], timeout: float | None) -> bool:
    """Wait up to ``timeout`` for ``done`` to get its outcome; return whether it has one."""
    # not concurrent.futures.wait(): it never wakes for a future cancelled by _settle
    with contextlib.suppress(concurrent.futures.CancelledError, TimeoutError):
        done.exception(timeout)
    return done.done()


def _settle(done: concurrent.futures.Future[T], task: asyncio.Task[T]) -> None:
    if task.cancelled():
        done.cancel()
    elif task.exception() is not None:
        done.set_exception(task.exception())
    else:
        done.set_result(task.result())


def start_process() -> None:
    """Build this process's clients and one ccxt instance per configured exchange."""

    async def open_instances() -> None:
        client = exchange_client()
        for key, exchange in config().exchanges.items():
            if exchange.enabled:
                client.gateway.instance(key)

    run_async(open_instances(), timeout=30)
    log.info(
        "process %s: exchange clients ready for %s",
        os.getpid(),
        ", ".join(config().exchanges) or "no exchange",
    )


def reset_after_fork() -> None:
    """Forget clients inherited from a parent process; they are rebuilt on first use."""
    with _lock:
        for name in ("redis", "limiter", "client", "loop", "llm", "http"):
            _state.pop(name, None)
