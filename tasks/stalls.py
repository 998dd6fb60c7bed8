"""Whether the stage a waiting chain stands at can still run (for the waiters in ``runs.py``).

A chain stands at its *frontier*: the first stage whose tasks have not all succeeded. Each
unfinished task of the frontier is in one of three places:

- its message on its queue, waiting for a worker (however long the queue is);
- with a live worker: reserved, scheduled for a countdown (a retry), or running;
- nowhere a worker will run it from: its message was lost with Redis (an outage without
  persistence, a purge), never sent (a chord whose count was lost in an outage), or fetched
  by a worker that died with it. The last one waits in Redis's unacked set until
  ``celery.visibility_timeout`` (an hour by default) has passed, then another worker gets it.

:class:`Watch` reports a chain in the third place once its frontier has been out of every
queue for its bound in a row, with Redis answering, and two askings of the live workers
(Celery's ``query_task`` broadcast, one stage check apart) found none holding it. A chain
whose frontier a live worker holds is asked about again one bound later, not at every check.

The queues are read in the result backend's Redis, which is the broker's in this fleet
(``celeryconfig.py``); with any other broker :class:`RedisLocator` cannot tell and nothing is
reported stalled.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from celery import states
from celery.result import AsyncResult, GroupResult
from kombu.transport.redis import PRIORITY_STEPS
from kombu.transport.redis import Channel as RedisChannel

from core.keys import KeySpace
from tasks import failures

#: How long an asking of the live workers waits for their answers.
HOLDERS_SECONDS = 1.0
#: Askings in a row, one stage check apart, that must find no live worker holding a task.
ASKINGS = 2


@dataclass(frozen=True)
class Waiting:
    """A task of a chain's frontier that has not ended."""

    id: str
    stage: str  # the stage as an operator reads it: "strategy.decide", "analysis.case short"
    queue: str  # the queue its message is sent to
    state: str  # PENDING, STARTED, RETRY
    worker: str | None = None  # the worker that started it


class Locator(Protocol):
    """Where the tasks a waiter waits for are: on a queue, fetched, held by a live worker."""

    def queued(self, tasks: Sequence[Waiting]) -> set[str] | None:
        """Return the ids of ``tasks`` whose message is on its queue (None: cannot tell)."""
        ...

    def fetched(self) -> set[str]:
        """Return the ids of the messages workers fetched and have not acknowledged."""
        ...

    def holders(self, ids: Sequence[str]) -> dict[str, str] | None:
        """Return the live worker holding each of ``ids`` it holds (None: no answer)."""
        ...


def waiting(result: AsyncResult, stage: str, queue: str) -> Waiting | None:
    """Return ``result`` as a waiting task, or None once it has ended."""
    return _waiting(result.id, result.backend.get_task_meta(result.id), stage, queue)


def _waiting(task_id: str, meta: dict[str, Any], stage: str, queue: str) -> Waiting | None:
    state = str(meta.get("status") or states.PENDING)
    if state in states.READY_STATES:
        return None
    info = meta.get("result")
    worker = info.get("hostname") if state == states.STARTED and isinstance(info, dict) else None
    return Waiting(task_id, stage, queue, state, worker)


def standing(
    final: AsyncResult,
    stages: Sequence[Sequence[str]],
    queue_of: Callable[[str], str],
    done: set[str],
) -> str | list[Waiting]:
    """Return the line of a stage that ended this chain unfinished, else its frontier.

    ``stages`` names the chain's tasks stage by stage (``runs.CHAIN_STAGES``); a name's first
    word is the task's, which ``queue_of`` routes. ``done``: ids known to have succeeded,
    kept by the caller across checks (a success never changes) and added to here.
    """
    tree = _stages_of(final)
    # a chain of another shape is still checked for failed stages, never for stalls
    known = [len(members) for members in tree] == [len(names) for names in stages]
    for depth, members in enumerate(tree):
        frontier: list[Waiting] = []
        for index, member in enumerate(members):
            if member.id in done:
                continue
            meta = member.backend.get_task_meta(member.id)
            state = meta.get("status")
            if state == states.SUCCESS:
                done.add(member.id)
            elif state in (states.REVOKED, states.FAILURE):
                error = meta.get("result")
                text = failures.one_line(str(error)) if error is not None else state
                return f"stopped: {str(state).lower()} stage ({type(error).__name__}: {text})"
            elif known:
                stage = stages[depth][index]
                task = _waiting(member.id, meta, stage, queue_of(stage.split()[0]))
                if task is not None:
                    frontier.append(task)
        if frontier:
            return frontier
    return []


def _stages_of(final: AsyncResult) -> list[list[AsyncResult]]:
    """Return a chain's results stage by stage, first stage first."""
    tree: list[list[AsyncResult]] = []
    node: Any = final
    while node is not None:
        tree.append(list(node.results) if isinstance(node, GroupResult) else [node])
        node = getattr(node, "parent", None)
    return tree[::-1]


class Watch:
    """Which waited-for chains stand at a frontier no worker will run, for ``seconds``."""

    def __init__(
        self, locator: Locator, seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.locator = locator
        self.seconds = seconds
        self.clock = clock
        self.since: dict[str, float] = {}
        self.misses: dict[str, int] = {}

    def check(self, frontiers: dict[str, list[Waiting]]) -> dict[str, str]:
        """Return the line of each chain (by key) whose frontier can no longer run."""
        queued = self.locator.queued([t for tasks in frontiers.values() for t in tasks])
        if queued is None:
            return {}
        out = {key: [t for t in tasks if t.id not in queued] for key, tasks in frontiers.items()}
        now = self.clock()
        for key in [k for k in self.since if not out.get(k)]:
            self.since.pop(key)
            self.misses.pop(key, None)
        due = [k for k, tasks in out.items() if tasks and self._lasted(k, now)]
        if not due:
            return {}
        holders = self.locator.holders([t.id for key in due for t in out[key]])
        if holders is None:  # the workers could not be asked: conclude nothing
            return {}
        lines: dict[str, str] = {}
        fetched: set[str] | None = None
        for key in due:
            lost = [t for t in out[key] if t.id not in holders]
            if not lost:  # a live worker has it: ask again one bound from now
                self.since[key] = now
                self.misses.pop(key, None)
                continue
            self.misses[key] = self.misses.get(key, 0) + 1
            if self.misses[key] >= ASKINGS:
                fetched = self.locator.fetched() if fetched is None else fetched
                lines[key] = describe(lost[0], fetched=lost[0].id in fetched)
        return lines

    def _lasted(self, key: str, now: float) -> bool:
        return now - self.since.setdefault(key, now) >= self.seconds

    def reset(self) -> None:
        """Forget every stall seen so far (Redis was away: the time it stood does not count)."""
        self.since.clear()
        self.misses.clear()


def describe(task: Waiting, *, fetched: bool) -> str:
    """Return the line an operator reads for a task no worker will run."""
    unacked = (
        "its message waits in Redis's unacked set until celery.visibility_timeout gives it "
        "to another worker"
    )
    if task.worker is not None:
        where = unacked if fetched else "its message is in no queue"
        return (
            f"stopped in {task.stage}: it started on {task.worker}, which no longer holds it "
            f"(the worker died or was restarted); {where}"
        )
    if fetched:
        return (
            f"stopped in {task.stage}: a worker fetched its message and no live worker holds "
            f"it (the worker died); {unacked}"
        )
    return (
        f"stopped in {task.stage}: its message is in no queue and no worker holds it (lost in "
        f"a Redis outage or purge, or never sent)"
    )


class RedisLocator:
    """Find tasks in the broker's Redis lists and ask the live workers who holds them."""

    def __init__(self, app: Any, exchange: str | None = None) -> None:
        self.app = app
        self.exchange = exchange
        options = dict(app.conf.broker_transport_options or {})
        self.prefix = str(options.get("global_keyprefix") or "")
        self.sep = str(options.get("sep", RedisChannel.sep))
        self.steps = list(options.get("priority_steps", PRIORITY_STEPS))
        self.keys = KeySpace(self.prefix)
        self.unacked = self.keys.broker_unacked(
            str(options.get("unacked_key", RedisChannel.unacked_key))
        )
        broker, backend = app.conf.broker_url, app.conf.result_backend
        same = bool(broker) and broker == backend and str(broker).startswith("redis")
        self.client: Any = getattr(app.backend, "client", None) if same else None

    def queue_of(self, task: str, exchange: str | None = None) -> str:
        """Return the queue the app's router sends ``task`` to (for ``exchange``'s work)."""
        kwargs = {"exchange": exchange or self.exchange}
        queue = self.app.amqp.router.route({}, task, (), kwargs).get("queue")
        return str(getattr(queue, "name", queue) or self.app.conf.task_default_queue)

    def queued(self, tasks: Sequence[Waiting]) -> set[str] | None:
        """Return the ids of ``tasks`` whose message is on its queue (any priority)."""
        if self.client is None:
            return None
        wanted: dict[str, set[str]] = {}
        for task in tasks:
            wanted.setdefault(task.queue, set()).add(task.id)
        if not wanted:
            return set()
        keys = [(queue, self._list(queue, step)) for queue in wanted for step in self.steps]
        pipe = self.client.pipeline(transaction=False)
        for _, key in keys:
            pipe.lrange(key, 0, -1)
        found: set[str] = set()
        for (queue, _), raws in zip(keys, pipe.execute(), strict=True):
            for raw in raws:
                found.update(i for i in wanted[queue] if i.encode() in raw)
        return found

    def _list(self, queue: str, step: int) -> str:
        return self.keys.broker_queue(queue, step, self.sep)

    def fetched(self) -> set[str]:
        """Return the ids of the messages in the broker's unacked set."""
        if self.client is None:
            return set()
        ids: set[str] = set()
        for raw in self.client.hvals(self.unacked):
            try:
                ids.add(str(json.loads(raw)[0]["headers"]["id"]))
            except (ValueError, LookupError, TypeError):
                continue
        return ids

    def holders(self, ids: Sequence[str]) -> dict[str, str] | None:
        """Ask the live workers (``query_task``) which of ``ids`` each holds.

        The asking runs in a thread joined with a bound: a broadcast caught by a Redis
        outage retries its publish for as long as the outage lasts, and the waiter must not.
        """
        answers: list[Any] = []

        def ask() -> None:
            try:
                answers.append(self.app.control.inspect(timeout=HOLDERS_SECONDS).query_task(*ids))
            except Exception:  # Redis away: no answer, which proves nothing
                return

        thread = threading.Thread(target=ask, name="stall-holders", daemon=True)
        thread.start()
        thread.join(HOLDERS_SECONDS + 5)
        if not answers:
            return None
        replies = answers[0] or {}  # None: no worker answered at all
        return {
            task_id: str(worker) for worker, held in replies.items() for task_id in (held or {})
        }
