"""What the risk guard must know about an account right now, read fresh.

The market price, the position in the symbol's base asset, the open orders, today's P&L and
the kill switch. Today's P&L comes from the position ledger (``resilience/ledger.py``): the
P&L realised today (UTC) plus the unrealised P&L of the open positions, the traded symbol at
the fresh ticker and the others at their last mark.

In paper mode against a real exchange the account is the paper wallet: the position is the
ledger's, and there are no open orders (paper orders never rest). The real account is not
read, keys or not.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from agents import risk as risk_lib
from resilience.fallback import FallbackConfig

if TYPE_CHECKING:
    from resilience.client import ResilientAPIClient
    from resilience.ledger import Ledger

#: Reads for the risk guard: fresh (no fallback), but they may wait for the budget.
FRESH = FallbackConfig(level="none", timeout=150)


async def read_risk_state(
    client: ResilientAPIClient, ledger: Ledger, exchange: str, symbol: str, mode: str
) -> tuple[risk_lib.RiskState, dict[str, Any]]:
    """Return the guard's view of the account and market, and the ticker it read."""
    kill = bool(await client.clients.aio().exists(client.keys.kill_switch()))
    if mode == "paper":
        answer = await client.resilient_request(exchange, "fetch_ticker", {"symbol": symbol}, FRESH)
        ticker = answer.data
        last = float(ticker["last"])
        await ledger.amark(exchange, symbol, last)
        held = await ledger.aposition(exchange, symbol)
        state = risk_lib.RiskState(
            market_price=last,
            position=held.amount if held is not None and held.side == "long" else 0.0,
            daily_pnl=await ledger.adaily_pnl(exchange, {symbol: last}),
            kill_switch=kill,
        )
        return state, ticker
    # together: the ticker and balance reads each wait for their batch to close
    ticker_answer, balance_answer, open_answer = await asyncio.gather(
        client.resilient_request(exchange, "fetch_ticker", {"symbol": symbol}, FRESH),
        client.resilient_request(exchange, "fetch_balance", {}, FRESH),
        client.resilient_request(exchange, "fetch_open_orders", {"symbol": symbol}, FRESH),
    )
    ticker, balance, opened = ticker_answer.data, balance_answer.data, open_answer.data
    last = float(ticker["last"])
    await ledger.amark(exchange, symbol, last)
    base = symbol.split("/", maxsplit=1)[0]
    state = risk_lib.RiskState(
        market_price=last,
        position=float((balance.get("free") or {}).get(base) or 0.0),
        open_orders=len(opened),
        daily_pnl=await ledger.adaily_pnl(exchange, {symbol: last}),
        kill_switch=kill,
    )
    return state, ticker
