"""The limiter manager over the in-memory backend: weights, waits, feedback, failure modes."""

from __future__ import annotations

import asyncio
from typing import TypeVar

import pytest

from core.config import AppConfig, ExchangeConfig, RateLimitRule
from core.errors import ConfigError, LimiterUnavailableError, RateLimitedError
from ratelimit import ExchangeRateLimitManager, Priority
from ratelimit.backend import Decision, Op
from ratelimit.backends.memory import MemoryBackend
from ratelimit.limits import build_limits
from ratelimit.pools import RateLimitResult
from ratelimit.tables import BINANCE, scope_weights

T = TypeVar("T")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def manager(config: AppConfig | None = None) -> tuple[ExchangeRateLimitManager, FakeClock]:
    clock = FakeClock()
    backend = MemoryBackend(clock=clock)
    return ExchangeRateLimitManager(
        config=config, backend=backend, sleep=clock.sleep, clock=clock
    ), clock


def test_binance_weights_depend_on_endpoint_and_parameters() -> None:
    assert scope_weights(BINANCE, "GET /api/v3/depth", {"limit": 100})["REQUEST_WEIGHT"] == 5
    assert scope_weights(BINANCE, "GET /api/v3/depth", {"limit": 500})["REQUEST_WEIGHT"] == 25
    assert scope_weights(BINANCE, "GET /api/v3/depth", {"limit": 5000})["REQUEST_WEIGHT"] == 250
    assert (
        scope_weights(BINANCE, "GET /api/v3/ticker/24hr", {"symbol": "BTCUSDT"})["REQUEST_WEIGHT"]
        == 2
    )
    assert scope_weights(BINANCE, "GET /api/v3/ticker/24hr", {})["REQUEST_WEIGHT"] == 80
    order = scope_weights(BINANCE, "POST /api/v3/order", {})
    assert order == {"REQUEST_WEIGHT": 1, "RAW_REQUESTS": 1, "ORDERS_10S": 1, "ORDERS_1D": 1}


def test_defaults_apply_the_safety_margin_and_reserve() -> None:
    limiter, _ = manager()
    weight = limiter.table("binance").pool("REQUEST_WEIGHT")
    assert weight.limit == pytest.approx(6000 * 0.9)
    assert weight.reserve == 0.2
    assert set(limiter.tables) == {"binance", "okx", "kraken", "coinbase", "htx"}


def test_seed_config_entries_build_limiters() -> None:
    config = AppConfig(
        exchanges={
            "binance": ExchangeConfig(
                rate_limits=[
                    RateLimitRule(type="token_bucket", capacity=6000, rate=100, window=60),
                    RateLimitRule(type="fixed_window", name="ORDERS_10S", limit=50, window=10),
                ]
            )
        }
    )
    table = build_limits(config)["binance"]
    extra = table.pool("CONFIG_0")
    assert (extra.algorithm, extra.limit, extra.rate) == ("token_bucket", 6000, 100)
    assert table.pool("ORDERS_10S").limit == 50, "a named entry replaces the default pool"
    assert scope_weights(table, "GET /api/v3/depth", {"limit": 500})["CONFIG_0"] == 25, (
        "extra pools spend the main weight"
    )


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            RateLimitRule(type="token_bucket", capacity=0.5, rate=10),
            "exchanges.binance.rate_limits.0.capacity: 0.5 is below the weight of the lightest binance request in this pool (1)",
        ),
        (
            RateLimitRule(type="fixed_window", limit=1, window=60),
            "exchanges.binance.rate_limits.0.limit: 1 leaves 0.8 for medium/low priority after the 20% high-priority reserve",
        ),
    ],
)
def test_a_capacity_below_one_requests_weight_is_a_config_error(
    rule: RateLimitRule, message: str
) -> None:
    config = AppConfig(exchanges={"binance": ExchangeConfig(rate_limits=[rule])})
    with pytest.raises(ConfigError) as info:
        build_limits(config, "config.yaml")
    assert message in str(info.value)
    assert str(info.value).startswith("invalid configuration in config.yaml")


def test_unknown_exchange_scope_and_priority_are_named() -> None:
    limiter, _ = manager()
    with pytest.raises(ValueError, match="unknown exchange 'mtgox'; configured: binance, coinbase"):
        limiter.decide("mtgox")
    with pytest.raises(ValueError, match="binance: unknown scope 'GET /nope'"):
        limiter.decide("binance", "GET /nope")
    with pytest.raises(ValueError, match="unknown priority 'urgent'"):
        limiter.decide("binance", priority="urgent")


def test_check_request_answers_the_seed_api() -> None:
    limiter, _ = manager()
    result = asyncio.run(limiter.check_request("binance", "public"))
    assert result.allowed and result.retry_after == 0
    assert result.remaining["REQUEST_WEIGHT"] == pytest.approx(5399)


def test_acquire_waits_exactly_for_the_next_window() -> None:
    limiter, clock = manager()
    clock.now = 600.0  # on a minute boundary
    for _ in range(172):  # 172 x 25 = 4300 of the 4320 medium/low share (5400 less the reserve)
        assert limiter.acquire("binance", "GET /api/v3/depth", params={"limit": 500}).waited == 0
    result = limiter.acquire("binance", "GET /api/v3/depth", params={"limit": 500}, max_wait=120)
    assert result.allowed
    assert clock.now >= 660.0 and result.waited == pytest.approx(60, rel=0.06)


def test_acquire_gives_up_past_max_wait_with_retry_after() -> None:
    limiter, clock = manager()
    clock.now = 600.0
    limiter.acquire("binance", weight=4320)
    with pytest.raises(RateLimitedError) as info:
        limiter.acquire("binance", weight=10, max_wait=5)
    assert info.value.retry_after == pytest.approx(60)
    assert clock.slept == []


def test_acquire_refuses_at_once_a_request_that_can_never_fit() -> None:
    limiter, clock = manager()
    with pytest.raises(RateLimitedError, match="can never be admitted"):
        limiter.acquire("binance", weight=10_000, max_wait=600)
    assert clock.slept == []


def test_high_priority_is_not_starved_by_polling() -> None:
    limiter, clock = manager()
    clock.now = 600.0
    while limiter.decide("binance", "GET /api/v3/klines", priority="low").allowed:
        pass
    assert limiter.decide("binance", "POST /api/v3/order", priority=Priority.HIGH).allowed


def test_acquire_async_waits_with_asyncio() -> None:
    limiter, clock = manager()
    clock.now = 600.0
    limiter.acquire("coinbase", "public", weight=10 * 0.9 * 0.8)

    async def main() -> RateLimitResult:
        return await limiter.acquire_async("coinbase", "public", max_wait=0.0001)

    with pytest.raises(RateLimitedError):
        asyncio.run(main())


def test_usage_headers_raise_the_shared_count() -> None:
    limiter, clock = manager()
    clock.now = 600.0
    read = limiter.report_headers("binance", {"X-MBX-USED-WEIGHT-1M": "5390", "Content-Type": "x"})
    assert read == {"REQUEST_WEIGHT": 5390}
    result = limiter.decide("binance", weight=20, priority="high")
    assert not result.allowed and result.denied_by == "REQUEST_WEIGHT"
    assert limiter.report_headers("binance", {"x-mbx-used-weight-1m": "lots"}) == {}


def test_a_429_cools_down_the_whole_exchange() -> None:
    limiter, clock = manager()
    assert limiter.report_throttle("binance", 429, retry_after=7) == pytest.approx(7)
    denied = limiter.decide("binance", priority="high")
    assert not denied.allowed and denied.cooldown and denied.retry_after == pytest.approx(7)
    clock.now += 7.01
    assert limiter.decide("binance").allowed


def test_a_pool_cooldown_only_stops_that_pool() -> None:
    limiter, _ = manager()
    limiter.report_throttle("binance", 429, retry_after=10, pool="ORDERS_10S")
    assert not limiter.decide("binance", "POST /api/v3/order", priority="high").allowed
    assert limiter.decide("binance", "GET /api/v3/klines").allowed


class DownBackend(MemoryBackend):
    """A backend whose Redis is unreachable: every operation ends in its ``failed``."""

    def run(self, op: Op[T]) -> T:
        return op.failed(LimiterUnavailableError("rate limiter Redis unreachable: refused"))


def test_redis_down_fails_orders_closed_and_shares_market_data_locally() -> None:
    limiter = ExchangeRateLimitManager(backend=DownBackend())
    with pytest.raises(LimiterUnavailableError, match="unreachable"):
        limiter.decide("binance", "POST /api/v3/order", priority="high")
    admitted = 0
    while limiter.decide("binance", "GET /api/v3/klines", priority="high").allowed:
        admitted += 1
    assert admitted == int(6000 * 0.9 / 8 / 2), "local share is 1/fleet_processes of the budget"


def test_redis_down_with_fail_policy_refuses_market_data_too() -> None:
    config = AppConfig.model_validate(
        {"exchanges": {"binance": {}}, "rate_limiting": {"on_redis_unavailable": "fail"}}
    )
    limiter = ExchangeRateLimitManager(config=config, backend=DownBackend())
    with pytest.raises(LimiterUnavailableError):
        limiter.decide("binance", "GET /api/v3/klines")


def test_every_key_of_one_decision_shares_one_cluster_hash_tag() -> None:
    import redis

    from core.keys import KeySpace
    from ratelimit.backends.redis import RedisBackend

    # a client that is never connected: the script call's keys are laid out before any I/O
    backend = RedisBackend(redis.Redis(port=1), KeySpace("fleet1:"))
    limiter = ExchangeRateLimitManager(backend=backend)
    charges = limiter.charges("binance", "public")
    keys = list(backend.decision(Decision("binance", tuple(charges), Priority.MEDIUM)).keys)
    assert len(keys) == 7
    tags = {key[key.index("{") : key.index("}") + 1] for key in keys}
    assert tags == {"{rl:binance}"}, keys
    assert all(key.startswith("fleet1:") for key in keys)


def test_a_small_limit_is_accepted_and_only_a_request_too_heavy_for_it_fails() -> None:
    # REQUEST_WEIGHT 100: once refused because a 5000-level book (250) could never pass
    rule = RateLimitRule(type="fixed_window", name="REQUEST_WEIGHT", limit=100, window=60)
    config = AppConfig(exchanges={"binance": ExchangeConfig(rate_limits=[rule])})
    limiter = ExchangeRateLimitManager(config=config, backend=MemoryBackend())
    assert limiter.decide("binance", "GET /api/v3/depth", params={"limit": 100}).allowed
    with pytest.raises(RateLimitedError, match="exceeds pool REQUEST_WEIGHT: it can never"):
        limiter.acquire("binance", "GET /api/v3/depth", params={"limit": 5000}, max_wait=1)
