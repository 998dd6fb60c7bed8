"""Build each configured exchange's effective limits: defaults, margin, reserve, overrides.

The seed's ``rate_limits`` entries (``type``, ``capacity``, ``rate``, ``window``, ``limit``,
``leak_rate``) become pools. An entry whose ``name`` matches a default pool (for Binance
``REQUEST_WEIGHT``, ``RAW_REQUESTS``, ``ORDERS_10S``, ``ORDERS_1D``) replaces it; any other
entry is an extra pool that every request to that exchange also spends its main weight in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from core.config import AppConfig, ExchangeConfig, RateLimitingConfig, RateLimitRule
from core.errors import ConfigError
from ratelimit.pools import PoolSpec
from ratelimit.tables import DEFAULT_TABLES, ExchangeTable, max_weight, min_weight


def pool_from_rule(rule: RateLimitRule, index: int, reserve: float) -> PoolSpec:
    """Return the pool a seed-style config entry describes."""
    name = rule.name or f"CONFIG_{index}"
    if rule.type == "token_bucket":
        return PoolSpec(
            name, "token_bucket", rule.capacity or 0, rate=rule.rate or 0, reserve=reserve
        )
    if rule.type == "leaky_bucket":
        return PoolSpec(
            name, "leaky_bucket", rule.capacity or 0, rate=rule.leak_rate or 0, reserve=reserve
        )
    return PoolSpec(
        name, rule.type, float(rule.limit or 0), window=rule.window or 0, reserve=reserve
    )


def _apply_overrides(
    key: str, table: ExchangeTable, exchange: ExchangeConfig, settings: RateLimitingConfig
) -> tuple[ExchangeTable, list[tuple[str, str]]]:
    reserve = settings.high_priority_reserve
    margin = 1.0 - settings.safety_margin
    pools = {p.name: dataclasses.replace(p.scaled(margin), reserve=reserve) for p in table.pools}
    mirrors = list(table.mirrors)
    problems: list[tuple[str, str]] = []
    for index, rule in enumerate(exchange.rate_limits):
        pool = pool_from_rule(rule, index, reserve)
        if pool.name not in pools:
            mirrors.append(pool.name)
        pools[pool.name] = pool
    result = dataclasses.replace(table, pools=tuple(pools.values()), mirrors=tuple(mirrors))
    for index, rule in enumerate(exchange.rate_limits):
        # only a pool no request at all could pass is refused: a heavier kind of request
        # (a 5000-level book) that does not fit fails alone, when made, in one line
        pool = result.pool(rule.name or f"CONFIG_{index}")
        lightest = min_weight(result, pool.name)
        field = "capacity" if rule.type in ("token_bucket", "leaky_bucket") else "limit"
        path = f"exchanges.{key}.rate_limits.{index}.{field}"
        if pool.limit < lightest:
            problems.append(
                (
                    path,
                    f"{pool.limit:g} is below the weight of the lightest {key} request in "
                    f"this pool ({lightest:g}); no request could ever pass",
                )
            )
        elif pool.limit * (1 - reserve) < lightest:
            problems.append(
                (
                    path,
                    f"{pool.limit:g} leaves {pool.limit * (1 - reserve):g} for medium/low "
                    f"priority after the {reserve:.0%} high-priority reserve, below the "
                    f"lightest request's weight ({lightest:g})",
                )
            )
    return result, problems


def build_limits(config: AppConfig, source: str = "<config>") -> dict[str, ExchangeTable]:
    """Return the effective table of every enabled exchange; raise ConfigError if unusable."""
    tables: dict[str, ExchangeTable] = {}
    problems: list[tuple[str, str]] = []
    for key, exchange in config.exchanges.items():
        if not exchange.enabled:
            continue
        default = DEFAULT_TABLES[exchange.ccxt_id or key]
        try:
            table, found = _apply_overrides(key, default, exchange, config.rate_limiting)
        except ValueError as exc:
            problems.append((f"exchanges.{key}.rate_limits", str(exc)))
            continue
        problems += found
        tables[key] = table
    if problems:
        raise ConfigError(source, problems)
    return tables


def share(tables: Mapping[str, ExchangeTable], processes: int) -> dict[str, ExchangeTable]:
    """Return the tables with every pool scaled to a ``1/processes`` share (local fallback).

    Buckets keep a capacity of at least one heaviest request (their rate is still 1/N), so
    every request stays possible; windows are cut to exactly 1/N.
    """
    result = {}
    for key, table in tables.items():
        pools = []
        for pool in table.pools:
            cut = pool.scaled(1 / processes)
            if pool.algorithm in ("token_bucket", "leaky_bucket"):
                floor = min(pool.limit, max_weight(table, pool.name))
                cut = dataclasses.replace(cut, limit=max(cut.limit, floor))
            pools.append(cut)
        result[key] = dataclasses.replace(table, pools=tuple(pools))
    return result
