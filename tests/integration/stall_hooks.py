"""Hooks that stop a run's stage on purpose (loaded into test workers with ``-I``).

A test sets a flag under the namespace naming a task; every worker that loaded this module
reads the flags before each task it runs:

- :data:`HOLD`: tasks of that name block before they start (one entry in :data:`HELD` each)
  until the test pushes one token per task onto :data:`RELEASE`; a held task is a task a live
  worker holds.
- :data:`DIE`: the worker that is about to run a task of that name dies at once with its
  pool (SIGKILL of its process group), holding the task's fetched, unacknowledged message,
  as a worker killed by the OOM killer or a lost node would.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from celery import Task
from celery.signals import task_prerun

from tasks import context

HOLD = "test:stalls:hold"
HELD = "test:stalls:held"
RELEASE = "test:stalls:release"
DIE = "test:stalls:die"
#: The longest a held task waits for its token.
HOLD_SECONDS = 60


@task_prerun.connect
def _hold_or_die(task: Task | None = None, task_id: str | None = None, **_: Any) -> None:
    if task is None:
        return
    runtime = context.current()
    client = runtime.redis_client()
    prefix = runtime.keyspace().prefix
    hold, die = client.mget([prefix + HOLD, prefix + DIE])
    name = task.name.encode()
    if die == name:
        os.killpg(os.getpgrp(), signal.SIGKILL)
    if hold == name:
        client.rpush(prefix + HELD, task_id or "?")
        client.blpop([prefix + RELEASE], timeout=HOLD_SECONDS)
