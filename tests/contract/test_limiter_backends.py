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
    decisions: list[tuple[object, ...]] = []
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


def _run_held(backend: object, pool: PoolSpec, seed: int) -> list[tuple[object, ...]]:
    """Decide held requests and settle admitted ones in a seeded order; return every answer."""
    rng = random.Random(seed)
    decisions: list[tuple[object, ...]] = []
    in_flight: list[tuple[str, float]] = []
    for step, (now, weight, priority) in enumerate(_sequence(seed)):
        if in_flight and rng.random() < 0.4:
            ticket, held = in_flight.pop(rng.randrange(len(in_flight)))
            backend.settle("ex", [Charge(pool, held)], ticket, now=now)  # type: ignore[attr-defined]
            continue
        ticket, hold = f"t{step}", rng.choice([0.0, 0.2, 3.0])
        r = backend.decide(  # type: ignore[attr-defined]
            "ex", [Charge(pool, weight)], priority, now=now, ticket=ticket, hold=hold
        )
        if r.allowed:
            in_flight.append((ticket, weight))
        decisions.append((r.allowed, round(r.retry_after, 9), tuple(r.remaining.values())))
    return decisions


@pytest.mark.parametrize("algorithm", list(POOLS))
@pytest.mark.parametrize("seed", [6, 7, 8])
def test_held_and_settled_requests_match_the_reference(
    backend: object, algorithm: str, seed: int
) -> None:
    reference = _run_held(MemoryBackend(), POOLS[algorithm], seed)
    assert _run_held(backend, POOLS[algorithm], seed) == reference
    assert any(d[0] for d in reference) and not all(d[0] for d in reference)


def test_a_held_request_counts_until_one_window_after_it_is_settled(backend: object) -> None:
    pool = PoolSpec("ticker", "sliding_window", 2, window=2.0)
    decide, settle = backend.decide, backend.settle  # type: ignore[attr-defined]
    assert decide("ex", [Charge(pool, 1)], Priority.HIGH, now=100.0, ticket="a", hold=10).allowed
    assert decide("ex", [Charge(pool, 1)], Priority.HIGH, now=100.1, ticket="b", hold=10).allowed
    # in flight past the window: both still count, and freeing one takes a window at least
    waiting = decide("ex", [Charge(pool, 1)], Priority.HIGH, now=103.0, charge=False)
    assert not waiting.allowed and waiting.retry_after == pytest.approx(2.0)
    settle("ex", [Charge(pool, 1)], "a", now=103.5)  # answered at 103.5: counts until 105.5
    settle("ex", [Charge(pool, 1)], "b", now=104.0)
    assert not decide("ex", [Charge(pool, 1)], Priority.HIGH, now=105.4, charge=False).allowed
    early = decide("ex", [Charge(pool, 1)], Priority.HIGH, now=104.5, charge=False)
    assert early.retry_after == pytest.approx(1.0)
    assert decide("ex", [Charge(pool, 1)], Priority.HIGH, now=105.6).allowed
    assert not decide("ex", [Charge(pool, 1)], Priority.HIGH, now=105.9).allowed
    assert decide("ex", [Charge(pool, 1)], Priority.HIGH, now=106.1).allowed


def test_settling_a_request_that_outlived_its_hold_counts_it_again(backend: object) -> None:
    pool = PoolSpec("ticker", "sliding_window", 1, window=2.0)
    decide = backend.decide  # type: ignore[attr-defined]
    assert decide("ex", [Charge(pool, 1)], Priority.HIGH, now=10.0, ticket="slow", hold=1).allowed
    # held for 1 s past its admission, it expired at 13 s: the request still in flight
    assert decide("ex", [Charge(pool, 1)], Priority.HIGH, now=13.5, charge=False).allowed
    backend.settle("ex", [Charge(pool, 1)], "slow", now=14.0)  # type: ignore[attr-defined]
    refused = decide("ex", [Charge(pool, 1)], Priority.HIGH, now=15.0, charge=False)
    assert not refused.allowed and refused.retry_after == pytest.approx(1.0)
