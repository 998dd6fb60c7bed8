"""The Celery app: ``celery -A workers worker -Q high,medium,low`` from the repository root.

Settings are computed lazily from the validated configuration the first time Celery reads
them (see ``celeryconfig.py``), so importing this module reads no file and opens no socket.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import (
    after_setup_logger,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
)

import celeryconfig
from core import events
from monitoring import fleet_stats, metrics
from tasks import context
from workers import runtime, tracing

#: The task modules every worker loads.
TASK_MODULES = [
    "tasks.health",
    "tasks.agents",
    "tasks.runs",
    "tasks.schedule",
    "tasks.exchange",
    "tasks.reconcile",
    "tasks.monitor",
]


def _settings() -> dict[str, Any]:
    return celeryconfig.celery_settings(runtime.config(), runtime.redis_url())


context.install(runtime)
app = Celery("crypto_ai", include=TASK_MODULES)
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

    try:
        logs.install(
            logger, runtime.config(), runtime.redis_client(), runtime.keyspace().logs_system()
        )
    except Exception:  # logging setup must not stop the worker
        logging.getLogger(__name__).exception("could not install the log sink")


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


_started: dict[str, float] = {}


@task_prerun.connect
def _task_started(task_id: str | None = None, **_: Any) -> None:
    if task_id:
        _started[task_id] = time.monotonic()


@task_postrun.connect
def _task_finished(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    started = _started.pop(task_id or "", None)
    if started is not None and task is not None:
        queue = (task.request.delivery_info or {}).get("routing_key") or "unknown"
        metrics.TASK_SECONDS.labels(queue, task.name).observe(time.monotonic() - started)
