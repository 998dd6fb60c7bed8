"""The Celery app: ``celery -A workers worker -Q high,medium,low`` from the repository root.

Settings are computed lazily from the validated configuration the first time Celery reads
them (see ``celeryconfig.py``), so importing this module reads no file and opens no socket.

No secret leaves a task: its result and its exception (message, chain, traceback: what the
result backend stores and Flower shows) are redacted on the way out (:class:`RedactingTask`),
and every log record of the process is redacted when it is made.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from celery import Celery, Task
from celery.exceptions import Ignore, Reject, Retry
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    beat_init,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
)

import celeryconfig
from core import events
from core.errors import ConfigError
from core.redact import redact, redact_data, scrub_exception
from core.redis_target import redact_url
from monitoring import fleet_stats, metrics
from resilience import delivery
from tasks import context
from workers import orphan, runtime, tracing

#: The task modules every worker loads.
TASK_MODULES = [
    "tasks.health",
    "tasks.agents",
    "tasks.runs",
    "tasks.schedule",
    "tasks.exchange",
    "tasks.reconcile",
    "tasks.monitor",
    "tasks.backtest",
]


def _settings() -> dict[str, Any]:
    """Return the Celery settings; on a bad configuration print it and exit 2.

    Warning: this is where ``celery -A workers worker|beat|flower`` first reads the config,
    deep inside Celery's option parsing; a :class:`ConfigError` exits the process here with
    its render on stderr instead of Celery's 70-line traceback. A program that embeds the
    app calls ``runtime.configure`` first and never reaches this exit.
    """
    try:
        return celeryconfig.celery_settings(runtime.config(), runtime.redis_url())
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr, flush=True)
        raise SystemExit(2) from None


class RedactingTask(Task):  # type: ignore[misc]  # celery is untyped
    """Run a task; redact its result and the exception it raises (text and whole chain)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Return the redacted result, or raise the exception scrubbed of secrets."""
        # under the tracer the request is pushed already and Celery calls run; called
        # directly, Celery's __call__ pushes one first
        run = self.run if self.request_stack.top is not None else super().__call__
        try:
            return redact_data(run(*args, **kwargs))
        except (Ignore, Reject):
            raise
        except Retry as retry:
            _scrub_retry(retry)
            raise
        except Exception as exc:
            clean = scrub_exception(exc)
            if clean is exc:
                raise
            failure: BaseException = clean
        # raised outside the handler, so the original is not attached again as its context
        raise failure


def _scrub_retry(retry: Retry) -> None:
    if isinstance(retry.exc, BaseException):
        retry.exc = scrub_exception(retry.exc)
    for name in ("message", "excs"):
        if isinstance(getattr(retry, name, None), str):
            setattr(retry, name, redact(getattr(retry, name)))


context.install(runtime)
app = Celery("crypto_ai", include=TASK_MODULES, task_cls=RedactingTask)
app.add_defaults(_settings)


@worker_process_init.connect
def _fresh_clients_per_process(**_: Any) -> None:
    runtime.reset_after_fork()
    metrics.install()
    tracing.setup(runtime.config().tracing)
    events.subscribe(fleet_stats.listener(runtime.redis_client(), runtime.keyspace()))
    try:
        runtime.start_process()
    except Exception:  # a worker still serves tasks that need no exchange
        logging.getLogger(__name__).exception("could not build the exchange clients")


@after_setup_logger.connect
def _redacted_logs_with_a_redis_copy(logger: logging.Logger, **_: Any) -> None:
    from monitoring import logs

    logs.redact_every_record()
    try:
        logs.install(
            logger, runtime.config(), runtime.redis_client(), runtime.keyspace().logs_system()
        )
    except Exception:  # logging setup must not stop the worker
        logging.getLogger(__name__).exception("could not install the log sink")


@after_setup_task_logger.connect
def _redacted_task_logs(**_: Any) -> None:
    from monitoring import logs

    logs.redact_every_record()  # Celery's task logger does not propagate to the root's handlers


@worker_process_shutdown.connect
def _forget_process_metrics(pid: int | None = None, **_: Any) -> None:
    metrics.process_exited(pid or os.getpid())
    tracing.shutdown()


@worker_init.connect
def _metrics_endpoint(**_: Any) -> None:
    """Serve this worker's merged metrics when CRYPTO_AI_METRICS_PORT is set (containers)."""
    port = os.environ.get("CRYPTO_AI_METRICS_PORT")
    if port and os.environ.get(metrics.MULTIPROC_ENV):
        metrics.prepare_directory(Path(os.environ[metrics.MULTIPROC_ENV]))
        metrics.serve(int(port))


@worker_init.connect
def _end_when_orphaned(**_: Any) -> None:
    """Started by the fleet: end after the grace period once the fleet is gone (orphan.py)."""
    orphan.watch_if_asked()


@beat_init.connect
def _end_beat_when_orphaned(**_: Any) -> None:
    """The same for beat."""
    orphan.watch_if_asked()


@worker_ready.connect
def _say_ready(sender: Any = None, **_: Any) -> None:
    """Print one line once the worker consumes, so a standalone worker says it is up."""
    print(ready_line(sender), file=sys.__stderr__, flush=True)


def ready_line(consumer: Any) -> str:
    """Return ``crypto-ai worker <name> ready: queues ...; redis <url>; exchanges ...``."""
    hostname = getattr(consumer, "hostname", None) or "?"
    task_consumer = getattr(consumer, "task_consumer", None)
    queues = [q.name for q in getattr(task_consumer, "queues", None) or []]
    config = runtime.config()
    exchanges = ", ".join(n for n, e in config.exchanges.items() if e.enabled) or "none"
    return (
        f"crypto-ai worker {hostname} ready: queues {','.join(queues) or '?'}; "
        f"redis {redact_url(runtime.redis_url())}; exchanges {exchanges}"
    )


_started: dict[str, float] = {}


_deliveries: dict[str, contextvars.Token[Any]] = {}


@task_prerun.connect
def _task_started(task_id: str | None = None, **_: Any) -> None:
    if task_id:
        _started[task_id] = time.monotonic()
        # bare orders of this task are named by its id (resilience/delivery.py)
        _deliveries[task_id] = delivery.begin(task_id)


@task_postrun.connect
def _task_finished(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    token = _deliveries.pop(task_id or "", None)
    if token is not None:
        with contextlib.suppress(ValueError):  # opened in another context: nothing to close
            delivery.end(token)
    started = _started.pop(task_id or "", None)
    if started is not None and task is not None:
        queue = (task.request.delivery_info or {}).get("routing_key") or "unknown"
        metrics.TASK_SECONDS.labels(queue, task.name).observe(time.monotonic() - started)
