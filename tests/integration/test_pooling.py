"""Connection pools: limits and timeouts from ``performance.connection_pooling`` hold."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import ccxt
import pytest

from core.config import ConnectionPoolingConfig, ExchangeConfig
from exchanges.ccxt_factory import make_exchange
from exchanges.http import pooled_session
from tests.integration.sandbox_fixtures import admin, running_sandbox

pytestmark = pytest.mark.integration
TICKERS = "GET /api/v3/ticker/24hr"


def slow_tickers(url: str, seconds: float) -> None:
    admin(url, "faults", "PUT", [{"kind": "hang", "seconds": seconds, "endpoint": TICKERS}])


async def _burst(url: str, pooling: ConnectionPoolingConfig | None) -> None:
    ex: Any = make_exchange("binance", ExchangeConfig(base_url=url), pooling=pooling)
    try:
        await ex.load_markets()
        await asyncio.gather(*(ex.fetch_ticker("BTC/USDT") for _ in range(12)))
    finally:
        await ex.close()


@pytest.mark.parametrize(("pool_size", "most"), [(2, 2), (None, 12)])
def test_the_pool_caps_concurrent_connections(pool_size: int | None, most: int) -> None:
    pooling = None if pool_size is None else ConnectionPoolingConfig(max_connections_per_exchange=2)
    with running_sandbox() as sb:
        # every ticker takes 0.3 s, so the 12 requests overlap unless the pool holds them back
        slow_tickers(sb.url, 0.3)
        asyncio.run(_burst(sb.url, pooling))
        seen = admin(sb.url, "stats")["clients"]["127.0.0.1"]["max_concurrent_requests"]
    assert seen == most


def test_the_read_timeout_cuts_a_stalled_answer_before_the_total_timeout() -> None:
    pooling = ConnectionPoolingConfig(connection_timeout=1, read_timeout=0.5)
    with running_sandbox() as sb:

        async def ask() -> float:
            ex: Any = make_exchange(
                "binance", ExchangeConfig(base_url=sb.url), pooling=pooling, timeout_ms=20_000
            )
            try:
                await ex.load_markets()
                slow_tickers(sb.url, 3.0)
                started = time.monotonic()
                with pytest.raises(ccxt.RequestTimeout):
                    await ex.fetch_ticker("BTC/USDT")
                return time.monotonic() - started
            finally:
                await ex.close()

        took = asyncio.run(ask())
    assert took < 2.5  # cut by the 0.5 s read timeout, not the 20 s total nor the 3 s stall


def test_the_news_session_is_one_pool_with_the_configured_limit() -> None:
    pooling = ConnectionPoolingConfig(max_connections_per_exchange=3)
    with running_sandbox() as sb:
        ping = "GET /api/v3/ping"  # any slow HTTP answer will do
        admin(sb.url, "faults", "PUT", [{"kind": "hang", "seconds": 0.3, "endpoint": ping}])

        async def burst() -> list[int]:
            async with pooled_session(pooling) as session:

                async def one() -> int:
                    async with session.get(f"{sb.url}/api/v3/ping") as response:
                        await response.read()
                        return response.status

                return list(await asyncio.gather(*(one() for _ in range(9))))

        statuses = asyncio.run(burst())
        seen = admin(sb.url, "stats")["clients"]["127.0.0.1"]["max_concurrent_requests"]
    assert statuses == [200] * 9
    assert seen == 3
