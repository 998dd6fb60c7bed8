"""Work out which Redis server a configuration points at, as a URL (pure, no I/O)."""

from __future__ import annotations

from urllib.parse import quote

from core.config import RedisConfig
from core.redact import redact


def external_redis_url(config: RedisConfig) -> str | None:
    """Return the configured server's URL, or None when the embedded server should be used.

    Warning: the URL carries the password; pass it to clients, never to logs or tasks.
    Use :func:`redact_url` before showing it.
    """
    if config.url is not None:
        return config.url.get_secret_value()
    if config.host is None:
        return None
    scheme = "rediss" if config.ssl else "redis"
    auth = ""
    if config.password is not None:
        user = quote(config.username or "", safe="")
        auth = f"{user}:{quote(config.password.get_secret_value(), safe='')}@"
    host = f"[{config.host}]" if ":" in config.host else config.host
    return f"{scheme}://{auth}{host}:{config.port}/{config.db}"


def redact_url(url: str) -> str:
    """Return the URL with any password replaced by ``***``, fit for logs and status."""
    return redact(url)
