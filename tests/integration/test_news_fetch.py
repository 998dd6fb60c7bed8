"""News feeds: fetched once per refresh period for the fleet, a down feed tried once."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import aiohttp
import pytest
import redis
from aiohttp import web

from core.config import AppConfig
from core.keys import KeySpace
from exchanges.http import pooled_session
from resilience import ResilientAPIClient
from sandbox.thread import AppThread
from tasks import news

pytestmark = pytest.mark.integration
T = TypeVar("T")
RSS = """<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>
<item><title>Bitcoin (BTC) rallies</title><link>https://example.com/1</link>
<pubDate>Mon, 23 Nov 2026 10:00:00 GMT</pubDate></item></channel></rss>"""


class Feed:
    """A feed server that counts its requests and can hang or fail."""

    def __init__(self) -> None:
        self.hits = 0
        self.mode = "ok"

    def app(self) -> web.Application:
        async def feed(request: web.Request) -> web.Response:
            self.hits += 1
            if self.mode == "hang":
                await asyncio.sleep(3)
            if self.mode == "fail":
                return web.Response(status=503)
            return web.Response(text=RSS, content_type="application/rss+xml")

        app = web.Application()
        app.router.add_get("/feed.rss", feed)
        return app


@contextmanager
def serving(feed: Feed) -> Iterator[str]:
    thread = AppThread(feed.app()).start()
    try:
        yield f"{thread.url}/feed.rss"
    finally:
        thread.stop()


class Runtime:
    """The parts of a worker's runtime the news stage uses: real Redis, a real HTTP pool."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client = client
        self.settings = AppConfig.model_validate(
            {
                "redis": {"key_prefix": namespace},
                "news": {"fetch_timeout": 0.5, "refresh_seconds": 1.5},
            }
        )
        self.session: aiohttp.ClientSession | None = None
        self.client_ = ResilientAPIClient(client, self.settings)

    def config(self) -> AppConfig:
        return self.settings

    def redis_client(self) -> redis.Redis:
        return self.client

    def keyspace(self) -> KeySpace:
        return KeySpace(self.settings.redis.key_prefix)

    def http_session(self) -> aiohttp.ClientSession:
        if self.session is None:
            self.session = pooled_session(self.settings.performance.connection_pooling)
        return self.session

    def exchange_client(self) -> ResilientAPIClient:
        # its cache and coalescer; the news stage calls no exchange through it
        return self.client_

    def llm(self) -> None:
        return None

    def run_async(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        raise AssertionError("not used here")


async def fetch_many(rt: Runtime, url: str, count: int) -> list[Any]:
    return list(
        await asyncio.gather(
            *(news._fetch_feed(rt, url) for _ in range(count)),  # type: ignore[arg-type]
            return_exceptions=True,
        )
    )


def test_tasks_reading_the_same_feed_fetch_it_once_per_refresh_period(
    namespace: str, redis_client: redis.Redis
) -> None:
    feed, rt = Feed(), Runtime(redis_client, namespace)

    async def scenario(url: str) -> tuple[list[Any], int, list[Any]]:
        try:
            first = await fetch_many(rt, url, 10)
            hits = feed.hits
            await asyncio.sleep(1.6)  # the copy is now older than refresh_seconds
            return first, hits, await fetch_many(rt, url, 10)
        finally:
            await rt.http_session().close()

    with serving(feed) as url:
        first, hits, again = asyncio.run(scenario(url))
    assert first == [RSS] * 10
    assert again == [RSS] * 10
    assert hits == 1
    assert feed.hits == 2


def test_a_hung_feed_costs_one_timeout_then_the_last_copy_serves(
    namespace: str, redis_client: redis.Redis
) -> None:
    feed, rt = Feed(), Runtime(redis_client, namespace)

    async def scenario(url: str) -> list[Any]:
        try:
            await fetch_many(rt, url, 1)  # a good copy first
            await asyncio.sleep(1.6)  # ... which is now due for a refresh
            feed.mode = "hang"
            return await fetch_many(rt, url, 6)
        finally:
            await rt.http_session().close()

    async def cold(url: str) -> list[Any]:
        try:
            return await fetch_many(rt, url, 6)
        finally:
            await rt.http_session().close()

    with serving(feed) as url:
        with_copy = asyncio.run(scenario(url))
        hung_hits = feed.hits - 1
    assert with_copy == [RSS] * 6  # the last copy, while the feed hangs
    assert hung_hits == 1  # one request found it hung; nobody else tried

    feed, rt = Feed(), Runtime(redis_client, namespace + "cold:")
    feed.mode = "fail"
    with serving(feed) as url:
        answers = asyncio.run(cold(url))
    assert all(isinstance(a, aiohttp.ClientError) for a in answers)
    assert feed.hits == 1  # no copy to fall back on: each task skips it, one request made
