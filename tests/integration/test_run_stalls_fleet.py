"""A chain whose stage can no longer run is reported naming the stage, long before the timeout.

Real Redis, real ``celery worker`` processes, the sandbox over HTTP and the real ``analyse``
command (``tests/integration/stall_waiter.py`` only shortens the stall bound). One fleet, two
runs of one symbol:

1. The strategy stage's message is deleted from its queue, as a Redis that lost it would:
   the analysts are held by a live worker past the bound first (not reported), then that
   worker stops consuming ``medium``, the analysts finish, the strategy message lands on
   ``medium`` and the test deletes it.
2. The worker that fetched the execution stage's message dies with it (SIGKILL of its
   process group): the message waits in Redis's unacked set for ``visibility_timeout``
   (an hour), which no waiter should sit out.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from tests.integration.sandbox_fixtures import running_sandbox
from tests.integration.stall_hooks import DIE, HELD, HOLD, RELEASE
from tests.integration.test_failures import write_config
from tests.integration.workers import REPO_ROOT, WorkerFleet, WorkerProcess, worker_fleet

pytestmark = pytest.mark.integration

#: The stall bound the waiter runs with here (production: tasks.runs.STALL_SECONDS).
STALL = 2.0
#: What ``analyse`` waits at most: a stall must be reported well before it.
RUN_TIMEOUT = 60


def start_worker(fleet: WorkerFleet, name: str, queues: str, concurrency: int) -> WorkerProcess:
    """Start a test worker that also loads the stall hooks; wait until it is ready."""
    return fleet.start(name, queues, concurrency, imports=("tests.integration.stall_hooks",))


def analyse(fleet: WorkerFleet, config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.stall_waiter",
            str(STALL),
            "analyse",
            "--config",
            str(config),
            "--timeout",
            str(RUN_TIMEOUT),
        ],
        cwd=REPO_ROOT,
        env=fleet.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(condition: Callable[[], bool], run: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and run.poll() is None:
        if condition():
            return
        time.sleep(0.05)
    output = run.communicate(timeout=5)[0] if run.poll() is not None else "(still running)"
    raise AssertionError(f"{what} never happened; analyse: {output}")


def queued(client: redis.Redis, queue: str, task: str) -> bool:
    return any(task.encode() in raw for raw in client.lrange(queue, 0, -1))


def outcome(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("binance BTC/USDT: ")]
    assert len(lines) == 1, output
    return lines[0].removeprefix("binance BTC/USDT: ")


@pytest.mark.timeout(2 * RUN_TIMEOUT + 120)
def test_a_lost_strategy_message_and_a_dead_execution_worker_are_reported_naming_the_stage(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    key = namespace.__add__
    host = socket.gethostname()
    with running_sandbox(symbols=["BTC/USDT"], history_days=1) as sb:
        config = write_config(tmp_path, sb.url, ["BTC/USDT"])
        with worker_fleet(redis_url, namespace, tmp_path, config=config) as fleet:
            start_worker(fleet, "early", "low,medium", concurrency=2)
            late = start_worker(fleet, "late", "high", concurrency=1)
            control = fleet.client_app().control

            redis_client.set(key(HOLD), "analysis.case")
            first = analyse(fleet, config)
            wait_for(lambda: redis_client.llen(key(HELD)) == 2, first, "both analysts held")
            time.sleep(3 * STALL)  # held by a live worker past the bound: still running
            control.cancel_consumer("medium", destination=[f"early@{host}"], reply=True)
            redis_client.delete(key(HOLD))
            redis_client.rpush(key(RELEASE), "go", "go")
            wait_for(
                lambda: queued(redis_client, key("medium"), "strategy.decide"),
                first,
                "the strategy message queued",
            )
            redis_client.delete(key("medium"))  # the message is lost with Redis
            output, _ = first.communicate(timeout=RUN_TIMEOUT + 30)
            lost = outcome(output)

            control.add_consumer("medium", destination=[f"early@{host}"], reply=True)
            redis_client.set(key(DIE), "execution.execute")
            second = analyse(fleet, config)
            output2, _ = second.communicate(timeout=RUN_TIMEOUT + 30)
            died = outcome(output2)
            late.process.wait(10)

    assert first.returncode == 1, output
    assert lost.startswith("stopped in strategy.decide: its message is in no queue"), output
    assert second.returncode == 1, output2
    assert died.startswith("stopped in execution.execute: a worker fetched its message"), output2
