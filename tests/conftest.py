"""Shared fixtures: one real Redis server for the session, a clean namespace per test.

The server is ``$REDIS_URL`` when set (tests then share it with whatever else uses it, so
every key a test writes lives under its own prefix and is deleted afterwards), otherwise an
embedded redis-server started for this session.
"""

from __future__ import annotations

import gc
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from workers.redis_server import EmbeddedRedis

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Return the URL of the session's real Redis server."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), appendonly=False)
    yield server.start()
    server.stop()


@pytest.fixture
def namespace() -> str:
    """Return a key prefix unique to this test."""
    return f"test:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def redis_client(redis_url: str, namespace: str) -> Iterator[redis.Redis]:
    """Yield a client of the session's Redis; delete every key under the test's prefix after."""
    client = redis.Redis.from_url(redis_url)
    yield client
    gc.collect()  # Celery result objects unsubscribe when collected: while Redis is up
    leftovers = list(client.scan_iter(match=f"{namespace}*", count=1000))
    if leftovers:
        client.delete(*leftovers)
    client.close()
