"""One suite, both limiter backends: the pure reference (memory) and the Lua script (Redis).

Both get the same sequence of times, weights and priorities and must make the same
decisions, with the same retry_after and remaining figures.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
import redis

from core.keys import KeySpace
from ratelimit.backend import Charge
from ratelimit.backends.memory import MemoryBackend
from ratelimit.backends.redis import RedisBackend
from ratelimit.pools import PoolSpec, Priority

POOLS = {
    "token_bucket": PoolSpec("tb", "token_bucket", 10, rate=4, reserve=0.2),
    "leaky_bucket": PoolSpec("lb", "leaky_bucket", 8, rate=3, reserve=0.25),
    "fixed_window": PoolSpec("fw", "fixed_window", 12, window=1.0, reserve=0.2),
    "sliding_window": PoolSpec("sw", "sliding_window", 12, window=1.0, reserve=0.2),
}


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[object]:
    if request.param == "memory":
        yield MemoryBackend(clock=lambda: 0.0)
        return
    client: redis.Redis = request.getfixturevalue("redis_client")
    yield RedisBackend(client, KeySpace(request.getfixturevalue("namespace")))


def _sequence(seed: int, steps: int = 300) -> list[tuple[float, float, Priority]]:
    rng = random.Random(seed)
    now, out = 1_700_000_000.0, []
    for _ in range(steps):
        now += rng.choice([0.0, 0.01, 0.05, 0.125, 0.3, 0.7])
        weight = rng.choice([0.5, 1, 1, 2, 3, 5])
        out.append((now, weight, rng.choice(list(Priority))))
    return out


def _run(backend: object, pools: list[PoolSpec], seed: int) -> list[tuple[object, ...]]:
    decisions = []
    for now, weight, priority in _sequence(seed):
        charges = [Charge(p, weight) for p in pools]
        r = backend.decide("ex", charges, priority, now=now)  # type: ignore[attr-defined]
        decisions.append(
            (
                r.allowed,
                round(r.retry_after, 9),
                r.denied_by,
                tuple(round(v, 9) for v in r.remaining.values()),
            )
        )
    return decisions


@pytest.mark.parametrize("algorithm", list(POOLS))
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_backend_matches_the_reference(backend: object, algorithm: str, seed: int) -> None:
    reference = _run(MemoryBackend(), [POOLS[algorithm]], seed)
    assert _run(backend, [POOLS[algorithm]], seed) == reference
    assert any(d[0] for d in reference) and not all(d[0] for d in reference)


@pytest.mark.parametrize("seed", [4, 5])
def test_linked_pools_match_the_reference(backend: object, seed: int) -> None:
    pools = list(POOLS.values())
    assert _run(backend, pools, seed) == _run(MemoryBackend(), pools, seed)


def test_a_denied_request_charges_no_pool(backend: object) -> None:
    small = PoolSpec("small", "fixed_window", 3, window=10)
    big = PoolSpec("big", "fixed_window", 100, window=10)
    decide = backend.decide  # type: ignore[attr-defined]
    assert decide("ex", [Charge(big, 1), Charge(small, 3)], Priority.HIGH, now=100.0).allowed
    denied = decide("ex", [Charge(big, 5), Charge(small, 1)], Priority.HIGH, now=100.5)
    assert not denied.allowed and denied.denied_by == "small"
    assert denied.retry_after == pytest.approx(9.5)
    after = decide("ex", [Charge(big, 0.0)], Priority.HIGH, now=100.6, charge=False)
    assert after.remaining["big"] == 99, "the denied request spent weight in 'big'"


def test_high_priority_may_use_the_reserve_and_low_may_not(backend: object) -> None:
    pool = PoolSpec("p", "fixed_window", 10, window=60, reserve=0.3)
    decide = backend.decide  # type: ignore[attr-defined]
    for _ in range(7):
        assert decide("ex", [Charge(pool, 1)], Priority.LOW, now=60.0).allowed
    assert not decide("ex", [Charge(pool, 1)], Priority.LOW, now=60.0).allowed
    assert not decide("ex", [Charge(pool, 1)], Priority.MEDIUM, now=60.0).allowed
    for _ in range(3):
        assert decide("ex", [Charge(pool, 1)], Priority.HIGH, now=60.0).allowed
    assert not decide("ex", [Charge(pool, 1)], Priority.HIGH, now=60.0).allowed


def test_fixed_windows_align_to_the_epoch(backend: object) -> None:
    pool = PoolSpec("minute", "fixed_window", 2, window=60)
    decide = backend.decide  # type: ignore[attr-defined]
    assert decide("ex", [Charge(pool, 2)], Priority.HIGH, now=119.0).allowed
    denied = decide("ex", [Charge(pool, 1)], Priority.HIGH, now=119.5)
    assert denied.retry_after == pytest.approx(0.5)
    assert decide("ex", [Charge(pool, 2)], Priority.HIGH, now=120.0).allowed


def test_a_weight_larger_than_the_pool_is_never_admitted(backend: object) -> None:
    pool = PoolSpec("p", "token_bucket", 5, rate=1)
    result = backend.decide("ex", [Charge(pool, 6)], Priority.HIGH, now=1.0)  # type: ignore[attr-defined]
    assert not result.allowed and result.never


def test_observed_usage_raises_the_count(backend: object) -> None:
    pool = PoolSpec("w", "fixed_window", 100, window=60)
    backend.observe("ex", [(pool, 95)], now=61.0)  # type: ignore[attr-defined]
    result = backend.decide("ex", [Charge(pool, 6)], Priority.HIGH, now=61.5)  # type: ignore[attr-defined]
    assert not result.allowed and result.remaining["w"] == 5
    backend.observe("ex", [(pool, 10)], now=62.0)  # type: ignore[attr-defined]
    lower = backend.decide("ex", [Charge(pool, 5)], Priority.HIGH, now=62.0)  # type: ignore[attr-defined]
    assert lower.allowed, "a lower reported count must not lower ours"
