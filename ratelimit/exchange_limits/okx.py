"""okx's published limits for a default (non-VIP) account, as the fleet's limit table.

Sources (read 2026-11):

OKX v5: https://www.okx.com/docs-v5/en/#overview-rate-limits and each endpoint's
"Rate Limit" line: market tickers 20 req/2 s, books and candles 40 req/2 s per IP;
place/cancel order 60 req/2 s per user; balance 10 req/2 s.
"""

from __future__ import annotations

from ratelimit.table_model import ExchangeTable, sliding

OKX = ExchangeTable(
    pools=(
        sliding("PUBLIC_TICKERS", 20, 2),
        sliding("PUBLIC_MARKET", 40, 2),
        sliding("PRIVATE_ACCOUNT", 10, 2),
        sliding("TRADE_ORDERS", 60, 2),
    ),
    scopes={
        "public": {"PUBLIC_MARKET": 1},
        "tickers": {"PUBLIC_TICKERS": 1},
        "private": {"PRIVATE_ACCOUNT": 1},
        "order": {"TRADE_ORDERS": 1},
        "cancel": {"TRADE_ORDERS": 1},
    },
)

TABLE = OKX
