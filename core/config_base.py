"""Shared pieces of the config models: the section base class, names, symbol checks."""

from __future__ import annotations

import re

from pydantic import (
    BaseModel,
    ConfigDict,
)

SUPPORTED_EXCHANGES = ("binance", "coinbase", "kraken", "htx", "okx")
#: Older ccxt ids that the seed's README uses, mapped to the current ones.
EXCHANGE_ALIASES = {"huobi": "htx", "okex": "okx", "okex5": "okx", "coinbasepro": "coinbase"}
#: The priority tiers, highest first; every tier is a Celery queue of the same name.
PRIORITY_QUEUES = ("high", "medium", "low")

_SYMBOL = re.compile(r"^[A-Z0-9]{2,15}/[A-Z0-9]{2,15}$")


def check_symbols(values: list[str]) -> list[str]:
    """Return ``values`` if every one looks like ``BASE/QUOTE``; raise naming the bad ones."""
    bad = [s for s in values if not _SYMBOL.match(s)]
    if bad:
        raise ValueError(f"expected symbols like 'BTC/USDT', got {', '.join(map(repr, bad))}")
    return values


class Section(BaseModel):
    """Base for every config section: unknown keys are errors, values are validated."""

    model_config = ConfigDict(extra="forbid", validate_default=True, frozen=True)
