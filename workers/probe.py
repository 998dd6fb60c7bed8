"""Container health probes: ``python -m workers.probe KIND``, exit 0 or 1 with one line.

Kinds (docs/DEPLOY.md shows which probe of which container runs which):

- ``redis``: the fleet's Redis (``REDIS_URL`` or the config) answers PING.
- ``worker --node NAME@%h``: Redis answers, then the worker named ``NAME@<this host>``
  answers a Celery ping. The ping is served by the worker's main process, so a worker busy
  running tasks still answers; one whose consumer loop is stuck, or that lost the broker for
  good, does not.
- ``beat --schedule PATH``: Redis answers and beat wrote its schedule file (``PATH`` or
  ``PATH.*``: the shelve backend picks the suffix) within ``--max-age`` seconds. Beat
  writes it on start and then every few minutes while it sends tasks.
- ``http URL``: the URL answers 2xx (Flower's ``/healthcheck``, the sandbox's
  ``/sandbox/stats``), for runtimes whose health check can only run a command.

The probe reads the config like every entry point, never starts the embedded Redis, and
gives up after ``--timeout`` seconds. Exit codes: 0 healthy, 1 unhealthy, 2 bad usage or a
bad config. The line on stdout is what the runtime shows as the probe's output.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import redis

from core.config import AppConfig
from core.config_loader import load_config
from core.errors import ConfigError
from core.redact import redact, register_config
from core.redis_target import external_redis_url, redact_url
from workers.redis_server import running_embedded

HEALTHY, UNHEALTHY, BAD_USAGE = 0, 1, 2


class Unhealthy(Exception):
    """The probed component does not answer as it should; the message says what failed."""


def redis_url(config: AppConfig) -> str:
    """Return the URL of the fleet's Redis; raise :class:`Unhealthy` if none is known."""
    url = external_redis_url(config.redis) or running_embedded(Path(config.redis.embedded.dir))
    if url is None:
        raise Unhealthy("no Redis configured (REDIS_URL or redis.url) and no embedded one runs")
    return url


def check_redis(config: AppConfig, timeout: float) -> str:
    """Return a line saying Redis answered PING; raise :class:`Unhealthy` if it did not."""
    url = redis_url(config)
    options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if url.startswith("rediss://"):
        options["ssl_cert_reqs"] = config.redis.ssl_cert_reqs
        if config.redis.ssl_ca_certs:
            options["ssl_ca_certs"] = str(config.redis.ssl_ca_certs)
    client = redis.Redis.from_url(url, **options)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise Unhealthy(f"redis at {redact_url(url)} does not answer: {_text(exc)}") from None
    finally:
        client.close()
    return f"redis at {redact_url(url)} answers"


def node_name(pattern: str) -> str:
    """Return ``pattern`` with ``%h``, ``%n`` and ``%d`` expanded as ``celery worker -n`` does."""
    from celery.utils.nodenames import host_format

    return str(host_format(pattern, host=socket.gethostname()))


def check_worker(config: AppConfig, node: str, timeout: float) -> str:
    """Return a line saying ``node`` answered a Celery ping; raise :class:`Unhealthy` if not."""
    from celery import Celery

    import celeryconfig

    check_redis(config, timeout)
    app = Celery("crypto_ai_probe", set_as_current=False)
    app.config_from_object(celeryconfig.celery_settings(config, redis_url(config)))
    app.conf.broker_connection_timeout = timeout
    app.conf.broker_connection_max_retries = 1
    started = time.monotonic()
    try:
        replies = app.control.ping(destination=[node], timeout=timeout)
    except Exception as exc:  # any broker failure means the worker cannot be reached
        raise Unhealthy(f"could not ping {node}: {_text(exc)}") from None
    finally:
        app.close()
    if not any(node in reply for reply in replies):
        raise Unhealthy(f"worker {node} did not answer a ping within {timeout:g}s")
    return f"worker {node} answers ({(time.monotonic() - started) * 1000:.0f} ms)"


def check_beat(config: AppConfig, schedule: Path, max_age: float, timeout: float) -> str:
    """Return a line saying beat's schedule is fresh; raise :class:`Unhealthy` if it is not."""
    check_redis(config, timeout)
    files = [p for p in schedule.parent.glob(f"{schedule.name}*") if p.is_file()]
    if not files:
        raise Unhealthy(f"beat has not written its schedule {schedule}")
    age = time.time() - max(p.stat().st_mtime for p in files)
    if age > max_age:
        raise Unhealthy(f"beat's schedule {schedule} is {age:.0f}s old (more than {max_age:g}s)")
    return f"beat's schedule {schedule} written {age:.0f}s ago"


def check_http(url: str, timeout: float) -> str:
    """Return a line saying ``url`` answered 2xx; raise :class:`Unhealthy` if it did not."""
    if not url.startswith(("http://", "https://")):
        raise Unhealthy(f"not an http(s) URL: {url}")
    try:
        # the scheme is checked above
        with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310
            status = int(answer.status)
    except (OSError, ValueError) as exc:
        raise Unhealthy(f"{url} does not answer: {_text(exc)}") from None
    return f"{url} answers {status}"


def _text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m workers.probe", description="Check one part of the fleet; exit 0 or 1."
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per check")
    kinds = parser.add_subparsers(dest="kind", required=True)
    kinds.add_parser("redis", help="the fleet's Redis answers PING")
    worker = kinds.add_parser("worker", help="this worker answers a Celery ping")
    worker.add_argument("--node", required=True, help="its -n name, e.g. worker-high@%%h")
    beat = kinds.add_parser("beat", help="beat wrote its schedule file recently")
    beat.add_argument("--schedule", type=Path, required=True, help="beat's -s path")
    beat.add_argument("--max-age", type=float, default=600.0, help="seconds (default 600)")
    http = kinds.add_parser("http", help="a URL answers 2xx")
    http.add_argument("url")
    return parser


def run(argv: list[str] | None = None) -> tuple[int, str]:
    """Return the exit code and the one line the probe prints for ``argv``."""
    args = _parser().parse_args(argv)
    try:
        if args.kind == "http":
            return HEALTHY, "ok: " + check_http(args.url, args.timeout)
        config = load_config()
        register_config(config)  # its secrets are masked in every line the probe prints
        if args.kind == "redis":
            line = check_redis(config, args.timeout)
        elif args.kind == "worker":
            line = check_worker(config, node_name(args.node), args.timeout)
        else:
            line = check_beat(config, args.schedule, args.max_age, args.timeout)
    except ConfigError as exc:
        return BAD_USAGE, "error: " + " ".join(exc.render().split())
    except Unhealthy as exc:
        return UNHEALTHY, f"unhealthy: {exc}"
    return HEALTHY, "ok: " + line


def main(argv: list[str] | None = None) -> int:
    """Run the probe, print its line, return its exit code."""
    code, line = run(argv)
    print(redact(line), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
