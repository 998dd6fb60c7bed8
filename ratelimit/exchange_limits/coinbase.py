"""coinbase's published limits for a default (non-VIP) account, as the fleet's limit table.

Sources (read 2026-11):

Coinbase Advanced Trade: https://docs.cdp.coinbase.com/advanced-trade/docs/rest-api-rate-limits
public 10 req/s per IP, private 30 req/s per user.
"""

from __future__ import annotations

from ratelimit.table_model import ExchangeTable, bucket

COINBASE = ExchangeTable(
    pools=(bucket("PUBLIC", 10, 10), bucket("PRIVATE", 30, 30)),
    scopes={
        "public": {"PUBLIC": 1},
        "private": {"PRIVATE": 1},
        "order": {"PRIVATE": 1},
        "cancel": {"PRIVATE": 1},
    },
)

TABLE = COINBASE
