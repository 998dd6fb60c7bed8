"""Analysis runs as Celery canvases: one chain per (exchange, symbol), all in one group.

    group(news.collect, market.snapshot) -> group(analysis.case long, short)
        -> strategy.decide -> execution.execute

Inputs travel as ids (run, exchange, symbol); outputs live in Redis under the run's keys.

A failed stage ends its chain at once. Celery hands a failed chord header to the chord body
as a ChordError only once every header task has finished, and the Redis backend never marks
the chain's last task, so whoever waits for the chain would wait out its timeout. Every
stage therefore carries an errback (``analysis.failed``) that fails the chain's last result
with the run's recorded error (``tasks/failures.py``) as soon as the stage fails.
"""

from __future__ import annotations

import time
import uuid
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from celery import chain, group, shared_task, states
from celery.exceptions import TimeoutError as ResultTimeoutError
from celery.result import AsyncResult, GroupResult

from core.config import AppConfig
from core.tracing import traceparent
from tasks import agents, context, failures


def new_run_id() -> str:
    """Return a sortable run id (UTC time plus a random suffix)."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


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
#: How long a chain may stand with a stage group finished and its next stage never sent
#: (Redis answering all along) before a waiter reports it stopped; see :func:`_unsent_stage`.
STALL_SECONDS = 20.0


def wait_submitted(result: Any, timeout: float) -> list[SymbolOutcome]:
    """Return how each symbol's run of a run sent by :func:`submit_watchlist` ended.

    Waits until every chain has ended (a failed stage ends its chain at once; so does a
    stage revoked or cancelled for good) or the timeout has passed; a chain still running
    then is reported as such. The results are polled, not subscribed to, so a Redis
    restart while waiting only delays the answer; Redis still away at the timeout raises
    :class:`~celery.exceptions.TimeoutError` with one line saying so.
    """
    deadline = time.monotonic() + timeout
    runs: GroupResult | None = None
    try:
        sent = _poll_value(result, deadline)
        runs = _poll_group(result, sent["group"], deadline)
        ended = _poll_chains(result.backend, runs.results, deadline)
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
    """Return ``result``'s value once ready (raising its error), polling through outages."""
    away = _Away(result.backend)
    while True:
        try:
            if result.state in states.READY_STATES:
                return result.get(timeout=max(1.0, deadline - time.monotonic()), propagate=True)
            away.last = None
        except away.errors as exc:
            away.last = exc
        if time.monotonic() >= deadline:
            raise away.timeout("the run was not published")
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


def _poll_chains(backend: Any, chains: list[Any], deadline: float) -> dict[str, str]:
    """Wait for every chain to end; return the chains that ended without a final result.

    A chain ends with its final result, or when one of its stages was revoked or failed
    without its errback ending the chain (a stage cancelled for good: the chain waits for
    nothing any more). The value is the line saying which stage and why.
    """
    away = _Away(backend)
    pending = {child.id: child for child in chains}
    stopped: dict[str, str] = {}
    stalled = _Stalls(STALL_SECONDS)
    polls = 0
    while pending and time.monotonic() < deadline:
        try:
            for key, child in list(pending.items()):
                if child.state in states.READY_STATES:
                    del pending[key]
                elif polls % _STAGES_EVERY == _STAGES_EVERY - 1:
                    line = _stopped_stage(child) or stalled.check(key, _unsent_stage(child))
                    if line is not None:
                        stopped[key] = line
                        del pending[key]
        except away.errors as exc:
            away.last = exc
            stalled.reset()  # a stage's next one may be waiting for Redis too
        polls += 1
        time.sleep(POLL_SECONDS)
    return stopped


class _Stalls:
    """When each chain was first seen stalled; a stall counts once it lasted ``seconds``."""

    def __init__(self, seconds: float, clock: Any = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self.since: dict[str, float] = {}

    def check(self, key: str, line: str | None) -> str | None:
        """Return ``line`` once this chain has been stalled for ``seconds`` in a row."""
        if line is None:
            self.since.pop(key, None)
            return None
        first = self.since.setdefault(key, self.clock())
        return line if self.clock() - first >= self.seconds else None

    def reset(self) -> None:
        """Forget every stall seen so far (Redis was away: time it stood does not count)."""
        self.since.clear()


def _stopped_stage(chain_result: Any) -> str | None:
    """Return the line of a stage of this chain that ended it unfinished, if one did."""
    seen: set[int] = set()
    todo: list[Any] = [getattr(chain_result, "parent", None)]
    while todo:
        node = todo.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        todo.extend(getattr(node, "results", None) or ())
        todo.append(getattr(node, "parent", None))
        if isinstance(node, AsyncResult) and node.state in (states.REVOKED, states.FAILURE):
            error = node.result
            text = failures.one_line(str(error)) if error is not None else node.state
            return f"stopped: {node.state.lower()} stage ({type(error).__name__}: {text})"
    return None


def _unsent_stage(chain_result: Any) -> str | None:
    """Return a line when a stage group of this chain finished but its next stage was never sent.

    The group is a chord header: its last task to finish counts itself in the chord's
    bookkeeping and sends the next stage. When Redis goes away between a task's result and
    that count (or between the count and the send), every task of the group has succeeded,
    the next stage stays pending and the chord never completes (its ``.c`` key never
    reads ``done``): nothing would ever send the next stage.
    """
    later: list[Any] = [chain_result]
    node = getattr(chain_result, "parent", None)
    while node is not None:
        members = list(node.results) if isinstance(node, GroupResult) else [node]
        if (
            isinstance(node, GroupResult)
            and any(r.state == states.PENDING for r in later)
            and all(r.state == states.SUCCESS for r in members)
            and _chord_unfinished(node)
        ):
            return (
                f"stopped: the next stage after {len(members)} finished tasks was never sent "
                f"(the chord of group {node.id} lost its count or its send in a Redis outage)"
            )
        later, node = members, getattr(node, "parent", None)
    return None


def _chord_unfinished(header: GroupResult) -> bool:
    """Return True when the Redis backend holds this chord's data but never completed it."""
    backend = header.backend
    key_of = getattr(backend, "get_key_for_group", None)
    client = getattr(backend, "client", None)
    if key_of is None or client is None:
        return False
    done = client.get(key_of(header.id, ".c"))
    return done != b"done" and bool(client.exists(key_of(header.id, ".j")))


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
