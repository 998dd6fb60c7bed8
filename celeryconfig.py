"""Celery settings derived from the validated configuration.

``celery_settings(config, broker_url)`` is a pure function; the app in ``workers/app.py``
calls it lazily, the first time Celery reads its configuration, so importing this module
reads no file and opens no connection.

Why these values:

- ``task_acks_late`` + ``task_reject_on_worker_lost``: a task is acknowledged after it ran,
  so a worker killed mid-task leaves it to be delivered again; every task is idempotent.
- ``worker_prefetch_multiplier = 1``: a worker holds one message per process, so a
  high-priority task is never stuck behind low-priority messages a busy worker prefetched.
- ``queue_order_strategy = "priority"``: a worker consuming ``high,medium,low`` always
  drains ``high`` first.
- ``visibility_timeout``: how long a fetched-but-unacknowledged message waits before Redis
  gives it to another worker. Longer means a dead worker's task waits longer to be
  redelivered; shorter than a countdown, ETA or a task's run time means a healthy task is
  delivered twice. The config validates that it exceeds both (default 3600 s). It is set
  the same for the broker and the result backend.
- Redis restarts (docs/MONITORING.md, "Redis restarts"): the broker runs on
  ``workers.redis_transport`` (kombu's Redis transport that settles acknowledgements and
  restores left over from a lost connection on the next one, instead of dying on them or
  leaving the messages for ``visibility_timeout``); workers reconnect for ever
  (``broker_connection_max_retries = None``); a task running when the broker connection is
  lost is cancelled and delivered again; result writes and task publishing retry over an
  outage of about :data:`OUTAGE_SECONDS` instead of failing the stage.
"""

from __future__ import annotations

import ssl
from typing import Any

from kombu.entity import Exchange, Queue

from core.config import PRIORITY_QUEUES, AppConfig
from tasks.routing import TierRouter

#: How long an outage result writes and task publishing ride out (retried about every second).
OUTAGE_SECONDS = 30

#: kombu's Redis transport, settling a lost connection's acks and restores on the next one.
BROKER_TRANSPORT = "workers.redis_transport:Transport"


def _retry_policy() -> dict[str, float]:
    return {
        "max_retries": OUTAGE_SECONDS,
        "interval_start": 0,
        "interval_step": 0.5,
        "interval_max": 1,
    }


def declared_queues() -> list[Queue]:
    """Return the high/medium/low queues, each on a direct exchange of its own name."""
    return [
        Queue(name, Exchange(name, type="direct"), routing_key=name) for name in PRIORITY_QUEUES
    ]


def beat_schedule(config: AppConfig) -> dict[str, dict[str, Any]]:
    """Return celery beat entries from ``schedules``; a missed run expires, never piles up."""
    schedule = {}
    for name, entry in config.schedules.items():
        if not entry.enabled:
            continue
        options: dict[str, Any] = {"expires": entry.every}
        if entry.queue:
            options["queue"] = entry.queue
        schedule[name] = {
            "task": entry.task,
            "schedule": entry.every,
            "kwargs": dict(entry.kwargs),
            "options": options,
        }
    return schedule


def _transport_options(config: AppConfig) -> dict[str, Any]:
    pool = config.redis.connection_pool
    options: dict[str, Any] = {
        "visibility_timeout": config.celery.visibility_timeout,
        "queue_order_strategy": "priority",
        "unacked_restore_interval": config.celery.unacked_restore_interval,
        # scan for abandoned messages at every interval, not every 10th (kombu's default)
        "unacked_restore_throttle": 1,
        "max_connections": pool.max_connections,
        "socket_timeout": pool.socket_timeout,
        "socket_connect_timeout": pool.socket_connect_timeout,
        "retry_on_timeout": pool.retry_on_timeout,
        "health_check_interval": pool.health_check_interval,
        "socket_keepalive": True,
    }
    if config.redis.key_prefix:
        options["global_keyprefix"] = config.redis.key_prefix
    return options


def _tls_options(config: AppConfig) -> dict[str, Any]:
    reqs = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}
    options: dict[str, Any] = {"ssl_cert_reqs": reqs[config.redis.ssl_cert_reqs]}
    if config.redis.ssl_ca_certs:
        options["ssl_ca_certs"] = str(config.redis.ssl_ca_certs)
    return options


def celery_settings(config: AppConfig, broker_url: str) -> dict[str, Any]:
    """Return the Celery settings for this configuration and broker URL."""
    transport = _transport_options(config)
    result_transport: dict[str, Any] = {
        key: transport[key]
        for key in ("visibility_timeout", "global_keyprefix")
        if key in transport
    }
    result_transport["retry_policy"] = _retry_policy()
    pool = config.redis.connection_pool
    settings: dict[str, Any] = {
        "broker_url": broker_url,
        "broker_transport": BROKER_TRANSPORT,
        "result_backend": broker_url,
        "broker_transport_options": transport,
        "result_backend_transport_options": result_transport,
        "broker_connection_retry_on_startup": True,
        "broker_connection_retry": True,
        "broker_connection_max_retries": None,
        "result_backend_always_retry": True,
        "result_backend_max_retries": OUTAGE_SECONDS,
        "result_backend_base_sleep_between_retries_ms": 100,
        "result_backend_max_sleep_between_retries_ms": 1000,
        "redis_retry_on_timeout": pool.retry_on_timeout,
        "redis_socket_keepalive": True,
        "redis_socket_connect_timeout": pool.socket_connect_timeout,
        "redis_backend_health_check_interval": pool.health_check_interval,
        "task_publish_retry": True,
        "task_publish_retry_policy": _retry_policy(),
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_queues": declared_queues(),
        "task_default_queue": "medium",
        "task_default_exchange": "medium",
        "task_default_routing_key": "medium",
        # the protective exits' watch (tasks/protection.py; on high by its name's tier)
        "imports": ("tasks.protection",),
        "task_routes": (TierRouter(config.celery.dedicated_exchanges),),
        "task_create_missing_queues": True,
        "task_time_limit": config.celery.task_time_limit,
        "task_soft_time_limit": config.celery.task_soft_time_limit,
        "result_expires": config.celery.result_expires,
        "task_track_started": True,
        "task_send_sent_event": True,
        "worker_send_task_events": True,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "beat_schedule": beat_schedule(config),
        "timezone": "UTC",
        "enable_utc": True,
    }
    if config.celery.worker_concurrency:
        settings["worker_concurrency"] = config.celery.worker_concurrency
    if broker_url.startswith("rediss://"):
        settings["broker_use_ssl"] = _tls_options(config)
        settings["redis_backend_use_ssl"] = _tls_options(config)
    return settings
