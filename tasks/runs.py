"""Analysis runs as Celery canvases: one chain per (exchange, symbol), all in one group.

    group(news.collect, market.snapshot) -> group(analysis.case long, short)
        -> strategy.decide -> execution.execute

Inputs travel as ids (run, exchange, symbol); outputs live in Redis under the run's keys.

A failed stage ends its chain at once. Celery hands a failed chord header to the chord body
as a ChordError only once every header task has finished, and the Redis backend never marks
the chain's last task, so whoever waits for the chain would wait out its timeout. Every
stage therefore carries an errback (``analysis.failed``) that fails the chain's last result
with the run's recorded error (``tasks/failures.py``) as soon as the stage fails.

A stage that can no longer run fails nothing: its message lost with Redis, never sent, or
fetched by a worker that died. The waiters watch each chain's frontier (``tasks/stalls.py``)
and report such a chain, naming the stage, about :data:`STALL_SECONDS` after it stopped.
"""

from __future__ import annotations

import time
import uuid
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from celery import chain, group, shared_task, states
from celery.exceptions import TimeoutError as ResultTimeoutError
from celery.result import AsyncResult, GroupResult

from core.config import AppConfig
from core.tracing import traceparent
from tasks import agents, context, failures, stalls


def new_run_id() -> str:
    """Return a sortable run id (UTC time plus a random suffix)."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


#: The tasks of a symbol's chain, stage by stage, as :func:`symbol_chain` builds it: what a
#: waiter names a stage by (a name's first word is the task's).
CHAIN_STAGES = (
    ("news.collect", "market.snapshot"),
    ("analysis.case long", "analysis.case short"),
    ("strategy.decide",),
    ("execution.execute",),
)


def symbol_chain(
    run_id: str, exchange: str, symbol: str, decided_at: str, parent: str | None = None
) -> Any:
    """Return the canvas of one symbol's run (``parent``: the run's traceparent)."""
    ids = {  # keywords: the router reads them
        "run_id": run_id,
        "exchange": exchange,
        "symbol": symbol,
        "traceparent": parent,
    }
    final_id = str(uuid.uuid4())  # the chain's result: what a waiter waits for
    ended = stage_failed.s(final_id=final_id, **ids)
    return chain(
        group(
            agents.collect_news.si(decided_at=decided_at, **ids).on_error(ended),
            agents.market_snapshot.si(**ids).on_error(ended),
        ),
        group(
            agents.analyse_case.s(side="long", **ids).on_error(ended),
            agents.analyse_case.s(side="short", **ids).on_error(ended),
        ),
        agents.decide.s(**ids).on_error(ended),
        agents.execute.s(**ids).set(task_id=final_id).on_error(ended),
    )


@shared_task(name="analysis.failed")
def stage_failed(
    request: Any,
    exc: BaseException,
    traceback: Any,
    *,
    run_id: str,
    exchange: str,
    symbol: str,
    final_id: str,
    traceparent: str | None = None,
) -> None:
    """End a symbol's chain after a stage failed: fail its last result with the run's error.

    Celery calls this in the process that saw the failure (an errback taking the request,
    the error and the traceback), at once, not after the rest of the chord header.
    """
    stage = str(getattr(request, "task", None) or "unknown stage")
    try:  # the failed task has recorded its error already; this covers a killed one
        found = failures.record(context.current(), run_id, exchange, symbol, stage, exc=exc)
    except Exception:  # Redis gone: still try to end the chain with what is known here
        found = failures.describe(stage, exc)
    failed = failures.StageFailedError(failures.line(found))
    stage_failed.backend.mark_as_failure(final_id, failed)


def watchlist_items(config: AppConfig) -> list[dict[str, Any]]:
    """Return the watchlist as small JSON items: ``[{"exchange": x, "symbols": [...]}]``."""
    return [{"exchange": i.exchange, "symbols": list(i.symbols)} for i in config.watchlist]


def run_canvas(
    run_id: str, decided_at: str, items: list[dict[str, Any]], parent: str | None = None
) -> Any:
    """Return the canvas of a run: one chain per (exchange, symbol), all in one group."""
    return group(
        [
            symbol_chain(run_id, item["exchange"], symbol, decided_at, parent)
            for item in items
            for symbol in item["symbols"]
        ]
    )


def watchlist_run(config: AppConfig, run_id: str | None = None) -> tuple[str, Any]:
    """Return (run id, canvas) covering every symbol of the watchlist."""
    run_id = run_id or new_run_id()
    decided_at = datetime.now(UTC).isoformat()
    return run_id, run_canvas(run_id, decided_at, watchlist_items(config), traceparent())


def submit_watchlist(config: AppConfig, run_id: str | None = None) -> tuple[str, Any]:
    """Send a whole watchlist run as one message; return (run id, its AsyncResult).

    Publishing every chain from the caller costs about a dozen Redis round trips per
    symbol (the tasks, the chord bookkeeping, a result subscription each); this sends one
    ``analysis.submit`` message and a worker, next to Redis, publishes the canvas. Wait for
    the run with :func:`wait_submitted`.
    """
    run_id = run_id or new_run_id()
    result = submit_run.apply_async(
        kwargs={
            "run_id": run_id,
            "decided_at": datetime.now(UTC).isoformat(),
            "items": watchlist_items(config),
            "traceparent": traceparent(),
        }
    )
    return run_id, result


@shared_task(name="analysis.submit")
def submit_run(
    run_id: str, decided_at: str, items: list[dict[str, Any]], traceparent: str | None = None
) -> dict[str, Any]:
    """Publish a run's canvas from inside the fleet; return its saved group and its symbols."""
    # not a child of this task: the submitter would decode the whole canvas from its result
    result = run_canvas(run_id, decided_at, items, traceparent).apply_async(add_to_parent=False)
    result.save()  # the submitter restores the group by id to wait for it
    release(result)
    symbols = [[item["exchange"], symbol] for item in items for symbol in item["symbols"]]
    return {"group": str(result.id), "run_id": run_id, "symbols": symbols}


@dataclass(frozen=True)
class SymbolOutcome:
    """How one symbol's run ended: its execution summary, or the line saying why it stopped."""

    exchange: str
    symbol: str
    summary: dict[str, Any] | None = None
    error: str | None = None


#: How often a waiter looks at the chains' results (and their stages' every 8th time).
POLL_SECONDS = 0.25
_STAGES_EVERY = 8
#: How long a chain's next stage may be out of every queue, held by no live worker, with
#: Redis answering, before a waiter reports the chain stopped there (``tasks/stalls.py``).
STALL_SECONDS = 20.0


def wait_submitted(result: Any, timeout: float) -> list[SymbolOutcome]:
    """Return how each symbol's run of a run sent by :func:`submit_watchlist` ended.

    Waits until every chain has ended (a failed stage ends its chain at once; so does a
    stage revoked or cancelled for good) or the timeout has passed; a chain still running
    then is reported as such. A chain whose next stage no worker will run (its message
    lost with Redis, never sent, or fetched by a worker that died) is reported stopped in
    that stage about :data:`STALL_SECONDS` after it stopped; so is a lost submission. The
    results are polled, not subscribed to, so a Redis restart while waiting only delays
    the answer; Redis still away at the timeout raises
    :class:`~celery.exceptions.TimeoutError` with one line saying so.
    """
    deadline = time.monotonic() + timeout
    runs: GroupResult | None = None
    try:
        sent = _poll_value(result, deadline)
        runs = _poll_group(result, sent["group"], deadline)
        exchanges = [exchange for exchange, _ in sent["symbols"]]
        ended = _poll_chains(result.backend, runs.results, deadline, exchanges)
        return [
            _outcome(child, sent["run_id"], exchange, symbol, timeout, stopped=ended.get(child.id))
            for child, (exchange, symbol) in zip(runs.results, sent["symbols"], strict=True)
        ]
    finally:
        release(result, runs)


class _Away:
    """The result backend's connection errors, and the last one seen while polling."""

    def __init__(self, backend: Any) -> None:
        known = tuple(getattr(backend, "connection_errors", ()) or ())
        self.errors: tuple[type[BaseException], ...] = (*known, ConnectionError, OSError)
        self.last: BaseException | None = None

    def timeout(self, what: str) -> ResultTimeoutError:
        if self.last is None:
            return ResultTimeoutError(f"{what}: no answer before the timeout")
        line = failures.one_line(str(self.last))
        return ResultTimeoutError(f"{what}: Redis unreachable ({type(self.last).__name__}: {line})")


def _poll_value(result: AsyncResult, deadline: float) -> Any:
    """Return ``result``'s value once ready (raising its error), polling through outages.

    A submission no worker will run (see :func:`wait_submitted`) raises
    :class:`~tasks.failures.StageFailedError` saying so.
    """
    away = _Away(result.backend)
    locator = stalls.RedisLocator(result.app)
    watch = stalls.Watch(locator, STALL_SECONDS)
    polls = 0
    while True:
        try:
            if result.state in states.READY_STATES:
                return result.get(timeout=max(1.0, deadline - time.monotonic()), propagate=True)
            away.last = None
            if polls % _STAGES_EVERY == _STAGES_EVERY - 1:
                name = str(submit_run.name)
                task = stalls.waiting(result, name, locator.queue_of(name))
                line = watch.check({result.id: [task] if task else []}).get(result.id)
                if line is not None:
                    raise failures.StageFailedError(f"the run was not published: {line}")
        except away.errors as exc:
            away.last = exc
            watch.reset()
        if time.monotonic() >= deadline:
            raise away.timeout("the run was not published")
        polls += 1
        time.sleep(POLL_SECONDS)


def _poll_group(result: AsyncResult, group_id: str, deadline: float) -> GroupResult:
    away = _Away(result.backend)
    while True:
        try:
            runs = GroupResult.restore(group_id, app=result.app)
            if runs is None:
                raise LookupError(f"the run's group {group_id} is not in the result backend")
            return runs
        except away.errors as exc:
            away.last = exc
        if time.monotonic() >= deadline:
            raise away.timeout("the run's chains could not be read")
        time.sleep(POLL_SECONDS)


def _poll_chains(
    backend: Any, chains: list[Any], deadline: float, exchanges: list[str] | None = None
) -> dict[str, str]:
    """Wait for every chain to end; return the chains that ended without a final result.

    A chain ends with its final result; when one of its stages was revoked or failed
    without its errback ending the chain (a stage cancelled for good); or when its next
    stage can no longer run (``tasks/stalls.py``). The value is the line saying which stage
    and why. ``exchanges``: each chain's exchange, for the queues of its stages.
    """
    away = _Away(backend)
    locator = stalls.RedisLocator(backend.app)
    exchange_of = dict(zip([c.id for c in chains], exchanges or [], strict=False))
    pending = {child.id: child for child in chains}
    stopped: dict[str, str] = {}
    watch = stalls.Watch(locator, STALL_SECONDS)
    done: set[str] = set()
    polls = 0
    while pending and time.monotonic() < deadline:
        try:
            frontiers: dict[str, list[stalls.Waiting]] = {}
            for key, child in list(pending.items()):
                if child.state in states.READY_STATES:
                    del pending[key]
                elif polls % _STAGES_EVERY == _STAGES_EVERY - 1:
                    found = stalls.standing(
                        child,
                        CHAIN_STAGES,
                        partial(locator.queue_of, exchange=exchange_of.get(key)),
                        done,
                    )
                    if isinstance(found, str):
                        stopped[key] = found
                        del pending[key]
                    else:
                        frontiers[key] = found
            if frontiers:
                for key, line in watch.check(frontiers).items():
                    stopped[key] = line
                    del pending[key]
        except away.errors as exc:
            away.last = exc
            watch.reset()  # a stage's next one may be waiting for Redis too
        polls += 1
        time.sleep(POLL_SECONDS)
    return stopped


def _outcome(
    child: AsyncResult,
    run_id: str,
    exchange: str,
    symbol: str,
    timeout: float,
    *,
    stopped: str | None = None,
) -> SymbolOutcome:
    try:
        if child.successful():
            return SymbolOutcome(exchange, symbol, summary=child.result)
        line = _failure_line(child, run_id, exchange, symbol, stopped)
    except _Away(child.backend).errors as exc:
        line = failures.one_line(
            f"outcome unknown: Redis unreachable ({type(exc).__name__}: {exc})"
        )
    if line is None:
        line = f"no outcome within {timeout:g} s: still running"
    return SymbolOutcome(exchange, symbol, error=line)


def _failure_line(
    child: AsyncResult, run_id: str, exchange: str, symbol: str, stopped: str | None
) -> str | None:
    """Return why a chain ended without a summary (None: it has not ended)."""
    failed = child.failed()
    if not failed and stopped is None:
        return None
    found = failures.recorded_error(context.current(), run_id, exchange, symbol)
    if found is not None:  # the stage's own error, not the cascade Celery made of it
        return failures.line(found)
    if not failed:
        return stopped
    error = child.result
    if isinstance(error, failures.StageFailedError):
        return str(error)
    return f"failed: {type(error).__name__}: {failures.one_line(str(error))}"


def release(*results: Any) -> None:
    """Stop listening for these results, their parents and their members, now.

    Every GroupResult Celery builds (also for a canvas's inner groups, when it publishes or
    restores one) makes the backend await each member until it is ready, subscribed and
    kept alive; collected later, after Redis has stopped or at interpreter exit, each one
    prints an "Exception ignored in AsyncResult.__del__" traceback, and in a worker they
    pile up run after run. Unsubscribing while Redis is up leaves nothing to collect.
    """
    seen: set[int] = set()
    todo: list[Any] = list(results)
    while todo:
        node = todo.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        todo.extend(getattr(node, "results", None) or ())
        todo.append(getattr(node, "parent", None))
        if isinstance(node, AsyncResult):
            with suppress(Exception):  # Redis already gone: nothing left to unsubscribe from
                node.backend.remove_pending_result(node)


def wait(result: Any, timeout: float) -> list[Any]:
    """Return every chain's final result (for a caller outside any task)."""
    deadline = time.monotonic() + timeout
    return list(result.get(timeout=max(1.0, deadline - time.monotonic()), propagate=True))
