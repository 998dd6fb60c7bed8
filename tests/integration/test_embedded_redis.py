"""The embedded redis-server: starts on loopback, is found by others, stops cleanly."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest
import redis

from workers.redis_server import EmbeddedRedis, running_embedded, stop_running_embedded

pytestmark = pytest.mark.integration


def test_embedded_server_serves_and_stops(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path) as server:
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        assert client.get("k") == b"v"
        assert server.url.startswith("redis://127.0.0.1:")
        assert running_embedded(tmp_path) == server.url
        pid = server.pid
        client.close()
    assert pid is not None and not psutil.pid_exists(pid)
    assert running_embedded(tmp_path) is None


def test_a_detached_server_is_found_and_stopped_by_its_directory(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path, appendonly=False)
    url = server.start()
    process = psutil.Process(server.pid)
    try:
        assert running_embedded(tmp_path) == url
        assert stop_running_embedded(tmp_path) is True
        process.wait(10)
        assert running_embedded(tmp_path) is None
    finally:
        server.stop()


def test_appendonly_keeps_data_across_a_restart(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path) as server:
        redis.Redis.from_url(server.url).rpush("queue", "task-1")
    with EmbeddedRedis(tmp_path) as server:
        assert redis.Redis.from_url(server.url).lrange("queue", 0, -1) == [b"task-1"]


def test_a_password_protected_server_needs_the_password_in_the_url(tmp_path: Path) -> None:
    from core.config import AppConfig
    from core.redis_target import external_redis_url, redact_url
    from workers.runtime import make_redis_client

    with EmbeddedRedis(tmp_path, appendonly=False, password="s3cr/et") as server:
        config = AppConfig.model_validate(
            {"redis": {"host": "127.0.0.1", "port": server.port, "password": "s3cr/et"}}
        )
        url = external_redis_url(config.redis)
        assert url is not None and "s3cr%2Fet" in url
        assert make_redis_client(url, config).ping() is True
        assert "s3cr" not in redact_url(url)
        with pytest.raises(redis.AuthenticationError):
            make_redis_client(f"redis://127.0.0.1:{server.port}/0", config).ping()
