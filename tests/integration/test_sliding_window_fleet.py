"""A fleet on a sliding window whose network delays requests unevenly: real Redis, the OKX
sandbox over real HTTP, behind a TCP relay that holds requests for a while.

The exchange counts a request when it arrives; the fleet decides when it admits. When the
network's delay changes (slow for a second, then fast), requests admitted one window apart
arrive less than one window apart, and a limiter that counted each request from its
admission lets more than the limit arrive inside one window.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis

from core.config import AppConfig
from exchanges.ccxt_factory import make_exchange
from ratelimit.manager import ExchangeRateLimitManager
from tests.integration.sandbox_fixtures import admin, running_sandbox

pytestmark = pytest.mark.integration
TICKER = "GET /api/v5/market/ticker"
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
#: OKX's published market/ticker budget: 20 per 2 s per IP, a sliding window
LIMIT, WINDOW = 20, 2.0
#: the fleet's pool: the 3% margin every pool keeps, and nothing per process
FLEET_LIMIT = math.floor(LIMIT * 0.97)
CLIENTS, POLLERS = 4, 4
#: the relay holds every request for DELAY seconds during the first SLOW seconds
DELAY, SLOW = 0.5, 1.0
SECONDS = 5.0


@contextlib.asynccontextmanager
async def slow_then_fast_relay(target: str, slow_until: list[float]) -> AsyncIterator[str]:
    """Relay TCP to ``target`` (``http://host:port``); hold each chunk a client sends for
    ``DELAY`` seconds while the clock is before ``slow_until[0]``. Yield the relay's URL."""
    host, port = target.removeprefix("http://").rstrip("/").split(":")

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hold: bool) -> None:
        try:
            while chunk := await reader.read(65536):
                if hold and time.time() < slow_until[0]:
                    await asyncio.sleep(DELAY)
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def serve(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(host, int(port))
        await asyncio.gather(pump(client_r, server_w, True), pump(server_r, client_w, False))

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    relay_port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{relay_port}"
    finally:
        server.close()


def fleet_config(url: str, namespace: str) -> AppConfig:
    pool = {"type": "sliding_window", "name": "MARKET_TICKER", "limit": FLEET_LIMIT}
    return AppConfig.model_validate(
        {
            "redis": {"key_prefix": namespace},
            "exchanges": {"okx": {"base_url": url, "rate_limits": [{**pool, "window": WINDOW}]}},
            "rate_limiting": {"high_priority_reserve": 0.0, "safety_margin": 0.03, "max_wait": 10},
        }
    )


async def poll(ex: Any, start: float, index: int, counts: dict[str, int]) -> None:
    """Offer this poller's share of twice the limit until ``SECONDS`` pass."""
    period = CLIENTS * POLLERS * WINDOW / (2 * LIMIT)
    due, n = start, index
    while time.time() < start + SECONDS:
        await asyncio.sleep(max(0.0, due - time.time()))
        due += period
        n += 1
        try:
            await ex.fetch_ticker(SYMBOLS[n % len(SYMBOLS)])
            counts["ok"] += 1
        except Exception:  # the sandbox counts what it refused; the test reads its count
            counts["failed"] += 1


def test_uneven_network_delay_causes_no_violation_without_a_per_process_margin(
    redis_url: str, namespace: str, redis_client: redis.Redis
) -> None:
    limits = {"overrides": {"market_ticker_per_2s": LIMIT}}
    with running_sandbox(dialect="okx", limits=limits) as sb:

        async def run() -> dict[str, int]:
            slow_until = [0.0]
            counts = {"ok": 0, "failed": 0}
            async with slow_then_fast_relay(sb.url, slow_until) as url:
                config = fleet_config(url, namespace)
                clients = []
                for _ in range(CLIENTS):  # each with its own limiter, as processes have
                    limiter = ExchangeRateLimitManager(redis.Redis.from_url(redis_url), config)
                    clients.append(make_exchange("okx", config.exchanges["okx"], limiter=limiter))
                try:
                    await asyncio.gather(*(ex.load_markets() for ex in clients))
                    start = time.time() + 0.1
                    slow_until[0] = start + SLOW
                    await asyncio.gather(
                        *(
                            poll(ex, start, i * POLLERS + j, counts)
                            for i, ex in enumerate(clients)
                            for j in range(POLLERS)
                        )
                    )
                finally:
                    await asyncio.gather(*(ex.close() for ex in clients))
            return counts

        counts = asyncio.run(run())
        stats = admin(sb.url, "stats")
    client = stats["clients"]["127.0.0.1"]
    assert stats["violations"] == 0 and client["sent_429"] == 0, (client, counts)
    served = stats["requests_by_endpoint"].get(TICKER, 0)
    # every request was served, and the fleet used its budget: in 5 s, over two windows'
    # worth (a request counts from its admission to one window after its answer)
    assert counts["ok"] == served and counts["failed"] == 0, counts
    assert served >= 2.5 * FLEET_LIMIT, served
