"""A stage that failed ends its symbol's run at once, with its error recorded in one line.

Each task shell records its own error (:func:`recorded`) before Celery sees it fail: the task
knows which stage it is and what it raised, while the failure Celery fans out to the chord
bodies after it names later stages or wraps the error in a ChordError. The first error of a
symbol's run wins; a later one (the other header task, a cascade) never overwrites it. The
errback that ends the chain (``analysis.failed`` in ``tasks/runs.py``) reads the record back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from celery.exceptions import Ignore, Reject, Retry

from core.redact import redact
from tasks.context import Runtime
from tasks.stages import STAGE_TTL

#: The stage name under which a run's error is kept (``run:<r>:<x>:<s>:error``).
ERROR_STAGE = "error"
MAX_MESSAGE = 300


class StageFailedError(Exception):
    """A symbol's run stopped at a stage; the message is the one line that says why."""


def one_line(text: str) -> str:
    """Return ``text`` on one line (whitespace collapsed), cut to a readable length."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= MAX_MESSAGE else flat[: MAX_MESSAGE - 3] + "..."


def describe(stage: str, exc: BaseException) -> dict[str, str]:
    """Return the record of an error raised in ``stage``: stage, error class, message."""
    # the record is stored and printed: an exchange's message may carry a signed URL or a key
    return {"stage": stage, "error": type(exc).__name__, "message": one_line(redact(str(exc)))}


def line(record: dict[str, Any]) -> str:
    """Return the one line an operator reads for a recorded error."""
    return f"failed in {record['stage']}: {record['error']}: {record['message']}"


def record(
    rt: Runtime, run_id: str, exchange: str, symbol: str, stage: str, *, exc: BaseException
) -> dict[str, Any]:
    """Store the error of ``stage`` unless the run already has one; return the stored one."""
    key = rt.keyspace().stage(run_id, exchange, symbol, ERROR_STAGE)
    mine = describe(stage, exc)
    rt.redis_client().set(key, json.dumps(mine), ex=STAGE_TTL, nx=True)
    return recorded_error(rt, run_id, exchange, symbol) or mine


def recorded_error(rt: Runtime, run_id: str, exchange: str, symbol: str) -> dict[str, Any] | None:
    """Return the error recorded for a symbol's run, or None."""
    raw = rt.redis_client().get(rt.keyspace().stage(run_id, exchange, symbol, ERROR_STAGE))
    return None if raw is None else dict(json.loads(raw))  # type: ignore[arg-type]


@contextmanager
def recorded(rt: Runtime, run_id: str, exchange: str, symbol: str, stage: str) -> Iterator[None]:
    """Record any error the block raises as the run's error, then let it propagate."""
    try:
        yield
    except (Retry, Ignore, Reject):  # Celery's control flow: the task has not failed
        raise
    except Exception as exc:
        # the record is a courtesy to the waiter: failing to write it (Redis gone) must not
        # hide the stage's own error, which the errback reports instead
        with suppress(Exception):
            record(rt, run_id, exchange, symbol, stage, exc=exc)
        raise
