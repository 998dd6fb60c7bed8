"""Small URL facts the fleet needs (pure)."""

from __future__ import annotations

from urllib.parse import urlparse

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def local_port(base_url: str | None) -> int | None:
    """Return the port of a base_url on this machine (a local sandbox), else None."""
    if not base_url:
        return None
    parsed = urlparse(base_url)
    if parsed.hostname not in LOCAL_HOSTS:
        return None
    return parsed.port or (443 if parsed.scheme == "https" else 80)
