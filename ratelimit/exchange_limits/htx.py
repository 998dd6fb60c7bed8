"""htx's published limits for a default (non-VIP) account, as the fleet's limit table.

Sources (read 2026-11):

HTX (Huobi): https://www.htx.com/en-us/opend/newApiPages/ (API access rate limits):
public market data 100 req per 10 s per IP per endpoint group (conservative reading of
"800 per second" aggregate), private 100 req per 10 s per UID, orders 50 per 2 s.
"""

from __future__ import annotations

from ratelimit.table_model import ExchangeTable, sliding

HTX = ExchangeTable(
    pools=(
        sliding("PUBLIC", 100, 10),
        sliding("PRIVATE", 100, 10),
        sliding("ORDERS", 50, 2),
    ),
    scopes={
        "public": {"PUBLIC": 1},
        "private": {"PRIVATE": 1},
        "order": {"PRIVATE": 1, "ORDERS": 1},
        "cancel": {"PRIVATE": 1, "ORDERS": 1},
    },
)

TABLE = HTX
