"""What the risk guard must know about an account right now, read fresh from the exchange.

The market price, the position in the symbol's base asset, the open orders, today's P&L
(from the first equity seen on the UTC day) and the kill switch. In paper mode against a
real exchange without keys the account cannot be read: the position, the open orders and
the P&L are taken as zero (a paper ledger is not kept yet).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from agents import risk as risk_lib
from resilience.fallback import FallbackConfig

if TYPE_CHECKING:
    from resilience.client import ResilientAPIClient

#: Reads for the risk guard: fresh (no fallback), but they may wait for the budget.
FRESH = FallbackConfig(level="none", timeout=150)


async def account_equity(
    client: ResilientAPIClient, exchange: str, balance: dict[str, Any], symbol: str = ""
) -> float:
    """Return the account's value in USDT over the watched assets and ``symbol``'s asset.

    The traded symbol counts even when it is not watched: otherwise buying it would look
    like a loss of the whole cost and trip the daily loss limit.
    """
    totals = balance.get("total") or {}
    equity = float(totals.get("USDT") or 0.0)
    watched = client.config.watched(exchange)
    max_age = client.config.performance.batch_processing.watchlist_max_age
    # prices from the watchlist's shared batched read, the snapshots' (at most max_age old)
    recent = FallbackConfig(level="none", timeout=150, fresh_ttl=max_age)
    for name in sorted({*watched, *([symbol] if symbol else [])}):
        amount = float(totals.get(name.split("/")[0]) or 0.0)
        if amount and name.endswith("/USDT"):
            answer = await client.resilient_within(exchange, "fetch_ticker", name, watched, recent)
            equity += amount * float(answer.data["last"])
    return equity


async def daily_pnl(client: ResilientAPIClient, exchange: str, equity: float) -> float:
    """Return today's (UTC) change in equity: the first equity seen today is the baseline."""
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    key = client.keys.daily_equity(exchange, day)
    redis = client.clients.aio()
    await redis.set(key, repr(equity), nx=True, ex=3 * 86400)
    return equity - float(cast(bytes, await redis.get(key)) or equity)


async def read_risk_state(
    client: ResilientAPIClient, exchange: str, symbol: str, mode: str
) -> tuple[risk_lib.RiskState, dict[str, Any]]:
    """Return the guard's view of the account and market, and the ticker it read."""
    kill = bool(await client.clients.aio().exists(client.keys.kill_switch()))
    private = mode != "paper" or client.config.exchanges[exchange].has_keys
    if not private:
        answer = await client.resilient_request(exchange, "fetch_ticker", {"symbol": symbol}, FRESH)
        ticker = answer.data
        state = risk_lib.RiskState(market_price=float(ticker["last"]), kill_switch=kill)
        return state, ticker
    # together: the ticker and balance reads each wait for their batch to close
    ticker_answer, balance_answer, open_answer = await asyncio.gather(
        client.resilient_request(exchange, "fetch_ticker", {"symbol": symbol}, FRESH),
        client.resilient_request(exchange, "fetch_balance", {}, FRESH),
        client.resilient_request(exchange, "fetch_open_orders", {"symbol": symbol}, FRESH),
    )
    ticker, balance, opened = ticker_answer.data, balance_answer.data, open_answer.data
    equity = await account_equity(client, exchange, balance, symbol)
    pnl = await daily_pnl(client, exchange, equity)
    base = symbol.split("/", maxsplit=1)[0]
    state = risk_lib.RiskState(
        market_price=float(ticker["last"]),
        position=float((balance.get("free") or {}).get(base) or 0.0),
        open_orders=len(opened),
        daily_pnl=pnl,
        kill_switch=kill,
    )
    return state, ticker
