"""The shape of an exchange's limit table: pools, request scopes and their weights."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ratelimit.pools import PoolSpec


@dataclass(frozen=True)
class ExchangeTable:
    """One exchange's pools, named request scopes, and per-endpoint weights.

    ``scopes`` maps a scope (``public``, ``private``, ``order``, ``cancel``, or an endpoint
    such as ``GET /api/v3/depth``) to the weight it spends in each pool.
    ``order_pools`` are the pools whose exhaustion must fail closed (orders).
    ``symbols_weights`` prices a request naming several symbols (``symbols=[...]``) by how
    many it names: ``((20, 2), (100, 40), (inf, 80))`` is 2 for up to 20 symbols, and so on.
    """

    pools: tuple[PoolSpec, ...]
    scopes: Mapping[str, Mapping[str, float]]
    order_scopes: frozenset[str] = frozenset({"order", "cancel"})
    param_weights: Mapping[str, tuple[str, tuple[tuple[float, float], ...]]] = field(
        default_factory=dict
    )
    no_symbol_weights: Mapping[str, float] = field(default_factory=dict)
    symbols_weights: Mapping[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)
    usage_headers: Mapping[str, str] = field(default_factory=dict)
    mirrors: tuple[str, ...] = ()

    def pool(self, name: str) -> PoolSpec:
        """Return the pool called ``name``."""
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise KeyError(name)


def fixed(name: str, limit: float, window: float) -> PoolSpec:
    """Return a fixed-window pool (counted on calendar boundaries)."""
    return PoolSpec(name, "fixed_window", limit, window=window)


def sliding(name: str, limit: float, window: float) -> PoolSpec:
    """Return a sliding-window pool."""
    return PoolSpec(name, "sliding_window", limit, window=window)


def bucket(name: str, capacity: float, rate: float) -> PoolSpec:
    """Return a token-bucket pool."""
    return PoolSpec(name, "token_bucket", capacity, rate=rate)
