"""Connection pool limits hold: one process never has more requests open than configured."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from core.config import ExchangeConfig
from exchanges.ccxt_factory import make_exchange
from tests.integration.sandbox_fixtures import admin, running_sandbox

pytestmark = pytest.mark.integration


async def _burst(url: str, pool_size: int | None) -> None:
    ex: Any = make_exchange("binance", ExchangeConfig(base_url=url), pool_size=pool_size)
    try:
        await ex.load_markets()
        await asyncio.gather(*(ex.fetch_ticker("BTC/USDT") for _ in range(12)))
    finally:
        await ex.close()


@pytest.mark.parametrize(("pool_size", "most"), [(2, 2), (None, 12)])
def test_the_pool_caps_concurrent_connections(pool_size: int | None, most: int) -> None:
    with running_sandbox() as sb:
        # every ticker takes 0.3 s, so the 12 requests overlap unless the pool holds them back
        admin(
            sb.url,
            "faults",
            "PUT",
            [{"kind": "hang", "seconds": 0.3, "endpoint": "GET /api/v3/ticker/24hr"}],
        )
        asyncio.run(_burst(sb.url, pool_size))
        seen = admin(sb.url, "stats")["clients"]["127.0.0.1"]["max_concurrent_requests"]
    assert seen == most
