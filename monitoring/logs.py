"""Logs: secrets redacted from every record, trace and span ids on records written inside a
span, and a capped copy in the Redis list ``logs:system`` (the seed's
``redis-cli LRANGE logs:system 0 -1``).

Redaction is ``core/redact.py``'s: the configured secrets and credential shapes (URL
userinfo, ``token=`` parameters, ``Authorization`` headers). A worker redacts every record
when it is made (:func:`redact_every_record`), whichever logger and handler it goes to, and
the handlers of the root logger redact again (:func:`install`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import redis

from core.config import AppConfig
from core.redact import MASK, redact, secrets_of
from core.tracing import current_ids
from monitoring import metrics

__all__ = [
    "REDACTED",
    "RedactingFilter",
    "RedisLogHandler",
    "TraceContextFilter",
    "install",
    "redact_every_record",
    "redact_record",
    "secrets_of",
]

REDACTED = MASK


def redact_record(record: logging.LogRecord, secrets: Iterable[str] = ()) -> None:
    """Rewrite a record in place: its message, exception and stack text redacted.

    The exception is kept as redacted text only (``exc_info`` is dropped), so no handler can
    format the original again.
    """
    try:
        message = record.getMessage()
    except Exception:  # a bad format string is the handler's error to report, not ours
        message = str(record.msg)
    record.msg, record.args = redact(message, secrets), ()
    if record.exc_info and record.exc_info[1] is not None:
        text = record.exc_text or logging.Formatter().formatException(record.exc_info)
        record.exc_text, record.exc_info = redact(text, secrets), None
    elif record.exc_text:
        record.exc_text = redact(record.exc_text, secrets)
    if record.stack_info:
        record.stack_info = redact(record.stack_info, secrets)


class RedactingFilter(logging.Filter):
    """Redact a record's message, exception and stack text (configured secrets and shapes)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def redact(self, text: str) -> str:
        """Return ``text`` redacted."""
        return redact(text, self.secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; never drop it."""
        redact_record(record, self.secrets)
        return True


def redact_every_record() -> None:
    """Make every log record of this process redacted when it is created (idempotent).

    A record factory reaches what handler filters miss: loggers that do not propagate
    (Celery's task logger), handlers added later, and every output (console, file, Redis).
    """
    previous = logging.getLogRecordFactory()
    if getattr(previous, "redacts", False):
        return

    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        redact_record(record)
        return record

    make.redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(make)


class TraceContextFilter(logging.Filter):
    """Append ``[trace=<id> span=<id>]`` to records written inside a span."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Add the ids when there is a current span; never drop the record."""
        trace_id, span_id = current_ids()
        if trace_id and "[trace=" not in str(record.msg):
            record.msg = f"{record.getMessage()} [trace={trace_id} span={span_id}]"
            record.args = ()
        return True


class RedisLogHandler(logging.Handler):
    """Push each record as JSON to a capped Redis list (newest first).

    While Redis is away the records wait in memory, at most ``buffer_size`` of them, and
    are sent when it answers again. Beyond the bound the oldest are dropped and counted
    (:attr:`dropped`, ``crypto_ai_log_records_dropped_total``); one line on stderr says when
    dropping starts and one when Redis is back. After a failed send the handler waits
    ``retry_interval`` seconds before trying again, so logging never waits on a dead Redis
    more than once per interval.
    """

    def __init__(
        self,
        client: redis.Redis,
        key: str,
        max_entries: int,
        level: int = logging.INFO,
        *,
        buffer_size: int | None = None,
        retry_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(level)
        self.client, self.key, self.max_entries = client, key, max_entries
        self.pending: deque[str] = deque(maxlen=buffer_size or max_entries)
        self.retry_interval, self.clock = retry_interval, clock
        self.dropped = 0
        self._down_since: float | None = None
        self._next_try = 0.0
        self._dropping = False

    def emit(self, record: logging.LogRecord) -> None:
        """Store the record (or keep it until Redis answers); never break the caller."""
        try:
            entry = self._entry(record)
        except Exception:  # a bad record (format string) is reported as logging reports it
            self.handleError(record)
            return
        if len(self.pending) == self.pending.maxlen:
            self._send()  # Redis may be back: send the kept records before dropping any
        if len(self.pending) == self.pending.maxlen:
            self._drop_oldest()
        self.pending.append(entry)
        self._send()

    def flush(self) -> None:
        """Send the records kept while Redis was away, if it answers now."""
        with self.lock if self.lock else contextlib.nullcontext():
            self._next_try = 0.0
            self._send()

    def _entry(self, record: logging.LogRecord) -> str:
        trace_id, span_id = current_ids()
        entry = {
            "ts": time.time(),
            "level": record.levelname,
            "logger": record.name,
            "process": record.process,
            "message": redact(record.getMessage()),
        }
        if trace_id:
            entry["trace_id"], entry["span_id"] = trace_id, span_id
        exception = record.exc_text
        if not exception and record.exc_info and record.exc_info[1] is not None:
            exception = logging.Formatter().formatException(record.exc_info)
        if exception:
            entry["exception"] = redact(exception)
        return json.dumps(entry)

    def _send(self) -> None:
        if not self.pending or self.clock() < self._next_try:
            return
        entries = list(self.pending)
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.lpush(self.key, *entries)  # oldest first, so the newest ends at the head
            pipe.ltrim(self.key, 0, self.max_entries - 1)
            pipe.execute()
        except (redis.RedisError, OSError):  # Redis is away: keep the records for later
            self._down_since = self._down_since or self.clock()
            self._next_try = self.clock() + self.retry_interval
            return
        for _ in entries:
            self.pending.popleft()
        if self._down_since is not None:
            self._recovered(len(entries))

    def _drop_oldest(self) -> None:
        self.pending.popleft()
        self.dropped += 1
        metrics.LOG_RECORDS_DROPPED.inc()
        if not self._dropping:
            self._dropping = True
            _warn(
                f"Redis log copy ({self.key}): Redis unreachable, {self.pending.maxlen} "
                "records kept; dropping the oldest from now on"
            )

    def _recovered(self, sent: int) -> None:
        if self._dropping:
            _warn(
                f"Redis log copy ({self.key}): Redis is back; sent {sent} kept records, "
                f"{self.dropped} dropped in all"
            )
        self._down_since, self._dropping = None, False


def _warn(line: str) -> None:
    # the real stderr: a worker's sys.stderr is a proxy that logs, which would come back here
    stream = sys.__stderr__
    if stream is not None:
        print(f"WARNING {line}", file=stream, flush=True)


def install(logger: logging.Logger, config: AppConfig, client: redis.Redis, key: str) -> None:
    """Redact secrets on every handler of ``logger`` and add the Redis copy."""
    redactor = RedactingFilter(secrets_of(config))
    tracer_ids = TraceContextFilter()
    sink = RedisLogHandler(client, key, config.monitoring.redis_log_max_entries)
    logger.addHandler(sink)
    for handler in logger.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(redactor)
            handler.addFilter(tracer_ids)
