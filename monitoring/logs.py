"""Logs: secrets redacted from every record, trace and span ids on records written inside a
span, and a capped copy in the Redis list ``logs:system`` (the seed's
``redis-cli LRANGE logs:system 0 -1``)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlparse

import redis
from pydantic import BaseModel, SecretStr

from core.config import AppConfig
from core.tracing import current_ids

REDACTED = "***"


def secrets_of(config: AppConfig) -> list[str]:
    """Return every secret value in the configuration (keys, passwords, secret URLs' passwords)."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, SecretStr):
            value = node.get_secret_value()
            found.append(value)
            password = urlparse(value).password if "://" in value else None
            if password:
                found.append(password)
        elif isinstance(node, BaseModel):
            for name in type(node).model_fields:
                walk(getattr(node, name))
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list | tuple):
            for value in node:
                walk(value)

    walk(config)
    return sorted({s for s in found if len(s) >= 4}, key=len, reverse=True)


class RedactingFilter(logging.Filter):
    """Replace every known secret in a record's message (and exception text) with ***."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def redact(self, text: str) -> str:
        """Return ``text`` with every secret replaced."""
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; never drop it."""
        record.msg = self.redact(record.getMessage())
        record.args = ()
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


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
    """Push each record as JSON to a capped Redis list (newest first)."""

    def __init__(self, client: redis.Redis, key: str, max_entries: int, level: int = logging.INFO):
        super().__init__(level)
        self.client, self.key, self.max_entries = client, key, max_entries

    def emit(self, record: logging.LogRecord) -> None:
        """Store the record; a Redis failure never breaks the caller."""
        try:
            trace_id, span_id = current_ids()
            entry = {
                "ts": time.time(),
                "level": record.levelname,
                "logger": record.name,
                "process": record.process,
                "message": record.getMessage(),
            }
            if trace_id:
                entry["trace_id"], entry["span_id"] = trace_id, span_id
            if record.exc_text:
                entry["exception"] = record.exc_text
            pipe = self.client.pipeline(transaction=False)
            pipe.lpush(self.key, json.dumps(entry))
            pipe.ltrim(self.key, 0, self.max_entries - 1)
            pipe.execute()
        except Exception:  # the log must not take the process down with Redis
            self.handleError(record)


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
