"""``workers.runtime.run_async``: a coroutine the caller stopped waiting for stops too.

The coroutines run on the process's real event loop thread (``runtime.event_loop()``).
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from workers.runtime import run_async


class Probe:
    """A coroutine that sleeps, then records that it ran on; it records its cancellation."""

    def __init__(self, sleep: float = 0.5, cleanup: float = 0.2) -> None:
        self.sleep, self.cleanup = sleep, cleanup
        self.ran_on: list[str] = []
        self.saw: list[str] = []

    async def run(self) -> str:
        try:
            await asyncio.sleep(self.sleep)
            self.ran_on.append("past the sleep")  # where an order would be placed
            return "done"
        except asyncio.CancelledError:
            self.saw.append("CancelledError")
            raise
        finally:
            await asyncio.sleep(self.cleanup)  # a lease release takes a round trip
            self.saw.append("finally")


def test_a_coroutine_past_its_timeout_is_cancelled_and_never_runs_on() -> None:
    probe = Probe()
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"cancelled after 0\.1s"):
        run_async(probe.run(), timeout=0.1)
    # run_async returned once the cancellation had run, finally block included, not later
    assert probe.saw == ["CancelledError", "finally"]
    assert time.monotonic() - started < 1.5
    time.sleep(1)
    assert probe.ran_on == [], "the coroutine went on after its caller timed out"


@contextmanager
def soft_time_limit_after(seconds: float) -> Iterator[None]:
    """Raise SoftTimeLimitExceeded in this (main) thread after ``seconds``, as Celery does.

    Celery's prefork pool signals the worker process (SIGUSR1) and the handler raises the
    exception in the task's thread, wherever it is blocked: here, inside ``run_async``.
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SoftTimeLimitExceeded()

    previous = signal.signal(signal.SIGUSR1, handler)
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGUSR1))
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR1, previous)


def test_a_soft_time_limit_in_the_waiting_thread_cancels_the_coroutine() -> None:
    assert threading.current_thread() is threading.main_thread()
    probe = Probe()
    started = time.monotonic()
    with soft_time_limit_after(0.1), pytest.raises(SoftTimeLimitExceeded):
        run_async(probe.run(), timeout=5)
    assert probe.saw == ["CancelledError", "finally"]
    assert time.monotonic() - started < 1.5
    time.sleep(1)
    assert probe.ran_on == [], "the coroutine went on after its task hit its soft time limit"


def test_the_coroutines_own_timeout_error_and_result_pass_through() -> None:
    async def refused() -> None:
        raise TimeoutError("lease still held after 24s")

    with pytest.raises(TimeoutError, match="lease still held after 24s"):
        run_async(refused(), timeout=5)

    probe = Probe(sleep=0.01, cleanup=0)
    assert run_async(probe.run(), timeout=5) == "done"
    assert probe.ran_on == ["past the sleep"] and probe.saw == ["finally"]


def test_the_coroutine_runs_in_the_callers_context() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    async def read() -> str:
        return var.get()

    token = var.set("caller's")
    try:
        assert run_async(read(), timeout=5) == "caller's"
    finally:
        var.reset(token)
