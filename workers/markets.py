"""Check the watchlist against the markets each enabled exchange lists (``config check``).

Markets are read once per exchange, through ccxt at the exchange's ``base_url``, with a
short timeout and without the fleet's limiter (no Redis is needed to check a file). An
exchange whose markets cannot be read (no network, the sandbox not running) leaves its
symbols unchecked, with a note: that is not a configuration error.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from core.config import AppConfig
from exchanges.ccxt_factory import make_exchange


@dataclass
class MarketCheck:
    """What checking the watchlist found: problems by field path, and notes."""

    problems: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


async def _listed(config: AppConfig, exchange: str, timeout: float) -> set[str]:
    settings = config.exchanges[exchange]
    client = make_exchange(exchange, settings, timeout_ms=int(timeout * 1000))
    try:
        return set(await asyncio.wait_for(client.load_markets(), timeout))
    finally:
        await client.close()


async def check_markets(config: AppConfig, timeout: float = 5.0) -> MarketCheck:
    """Return each watchlist symbol an enabled exchange does not list, as a problem."""
    found = MarketCheck()
    wanted = sorted(
        {
            item.exchange
            for item in config.watchlist
            if item.exchange in config.exchanges and config.exchanges[item.exchange].enabled
        }
    )
    answers = await asyncio.gather(
        *(_listed(config, exchange, timeout) for exchange in wanted), return_exceptions=True
    )
    listed: dict[str, set[str]] = {}
    for exchange, answer in zip(wanted, answers, strict=True):
        if isinstance(answer, BaseException):
            where = config.exchanges[exchange].base_url or "its default URL"
            reason = " ".join(str(answer).split())[:200] or type(answer).__name__
            found.notes.append(
                f"could not read {exchange}'s markets from {where} "
                f"({type(answer).__name__}: {reason}); its symbols are not checked"
            )
        else:
            listed[exchange] = answer
    for index, item in enumerate(config.watchlist):
        markets = listed.get(item.exchange)
        if markets is None:
            continue
        for symbol in item.symbols:
            if symbol not in markets:
                found.problems.append(
                    (f"watchlist.{index}.symbols", f"{item.exchange} has no market {symbol!r}")
                )
    return found
