"""One order whose response is lost, placed through the fleet's client: for every exchange.

The sandbox drops the response of the order endpoint once (``response_lost``); the client's
write then has an unknown outcome and must find the order by its client order id.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis

from core.config import AppConfig
from exchanges.gateway import CcxtGateway
from ratelimit.manager import ExchangeRateLimitManager
from resilience import ResilientAPIClient, ResilientResponse
from sandbox.thread import SandboxThread
from tests.integration.sandbox_fixtures import admin


def place_with_lost_response(
    redis_client: redis.Redis,
    sb: SandboxThread,
    settings: dict[str, Any],
    endpoint: str,
    client_order_id: str,
) -> tuple[ResilientResponse, dict[str, Any], list[Any]]:
    """Place a limit buy of 0.01 ETH/USDT whose response is lost; return (the client's answer,
    the sandbox's stats, the sandbox's orders)."""
    exchange = next(iter(settings["exchanges"]))
    settings = {**settings, "trading": {"risk": {"max_position_per_symbol": 1e6}}}
    cfg = AppConfig.model_validate(settings)
    limiter = ExchangeRateLimitManager(redis_client, cfg)
    client = ResilientAPIClient(
        redis_client, cfg, limiter=limiter, gateway=CcxtGateway(cfg, limiter, timeout_ms=1000)
    )
    fault = {"kind": "response_lost", "seconds": 3, "count": 1, "endpoint": endpoint}
    admin(sb.url, "faults", "PUT", [fault])

    async def place() -> ResilientResponse:
        try:
            ticker = await client.resilient_request(
                exchange, "fetch_ticker", {"symbol": "ETH/USDT"}
            )
            return await client.resilient_request(
                exchange,
                "create_order",
                {
                    "symbol": "ETH/USDT",
                    "type": "limit",
                    "side": "buy",
                    "amount": 0.01,
                    "price": round(ticker.data["last"] * 0.99, 2),
                    "params": {"clientOrderId": client_order_id},
                },
            )
        finally:
            await client.close()

    answer = asyncio.run(place())
    return answer, admin(sb.url, "stats"), list(sb.sandbox.exchange.orders.values())
