"""kraken's published limits for a default (non-VIP) account, as the fleet's limit table.

Sources (read 2026-11):

Kraken: https://docs.kraken.com/api/docs/guides/spot-rest-ratelimits : private calls
add 1 to a counter (ledger/trade-history queries 2) that decays at 0.33/s with a maximum
of 15 (Starter tier); public endpoints about 1 req/s per IP.
"""

from __future__ import annotations

from ratelimit.pools import PoolSpec
from ratelimit.table_model import ExchangeTable, bucket

KRAKEN = ExchangeTable(
    pools=(
        bucket("PUBLIC", 1, 1),
        PoolSpec("PRIVATE_COUNTER", "leaky_bucket", 15, rate=0.33),
    ),
    scopes={
        "public": {"PUBLIC": 1},
        "private": {"PRIVATE_COUNTER": 1},
        "history": {"PRIVATE_COUNTER": 2},
        "order": {"PRIVATE_COUNTER": 1},
        "cancel": {"PRIVATE_COUNTER": 1},
    },
)

TABLE = KRAKEN
