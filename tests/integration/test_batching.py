"""Fleet-wide batching on real Redis, the sandbox over HTTP, and several processes."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from core.config import AppConfig
from core.errors import InvalidRequestError, RateLimitedError, RetryableError
from exchanges.request import request_priority
from ratelimit.pools import Priority
from resilience import FallbackConfig, FallbackLevel, ResilientAPIClient
from tests.integration.resilience_load import tickers
from tests.integration.sandbox_fixtures import admin, running_sandbox

pytestmark = pytest.mark.integration
SPAWN = multiprocessing.get_context("spawn")
T = TypeVar("T")
SYMBOLS = [f"C{i:02d}/USDT" for i in range(50)]
TICKERS = "GET /api/v3/ticker/24hr"
MARKETS = "GET /api/v3/exchangeInfo"


def config_for(url: str, namespace: str, window: float = 2.0, **batching: Any) -> dict[str, Any]:
    settings = {"batch_timeout": window, "batch_size": 50, "idle_timeout": window, **batching}
    return {
        "redis": {"key_prefix": namespace},
        "exchanges": {"binance": {"base_url": url}},
        "retry_strategies": {"default": {"max_attempts": 2, "base_delay": 0.05, "jitter": False}},
        "performance": {"batch_processing": settings},
    }


def run_with(client: ResilientAPIClient, scenario: Callable[[], Awaitable[T]]) -> T:
    """Run a scenario on a fresh event loop, closing the client's HTTP sessions after."""

    async def main() -> T:
        try:
            return await scenario()
        finally:
            await client.close()

    return asyncio.run(main())


def stats(url: str) -> dict[str, Any]:
    answer: dict[str, Any] = admin(url, "stats")
    return answer


def ticker_weight(url: str) -> float:
    """Weight the sandbox charged, less the one market list each process loads."""
    seen = stats(url)
    total = sum(c["weight_total"] for c in seen["clients"].values())
    return float(total - 20 * seen["requests_by_endpoint"].get(MARKETS, 0))


def test_fifty_processes_worth_of_ticker_requests_become_the_cheapest_batched_calls(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with running_sandbox(symbols=SYMBOLS) as sb:
        config = config_for(sb.url, namespace)
        go = tmp_path / "go"
        outs, procs = [], []
        for i in range(5):  # 5 processes x 10 concurrent callers, one symbol each
            out = tmp_path / f"batch-{i}.json"
            share = SYMBOLS[i * 10 : (i + 1) * 10]
            procs.append(
                SPAWN.Process(target=tickers, args=(redis_url, config, share, str(out), str(go)))
            )
            outs.append(out)
        for p in procs:
            p.start()
        deadline = time.time() + 60
        while not all(Path(f"{o}.ready").exists() for o in outs) and time.time() < deadline:
            time.sleep(0.05)
        tmp = tmp_path / "go.tmp"
        tmp.write_text(str(time.time() + 0.3))  # every process starts at the same moment
        tmp.rename(go)
        for p in procs:
            p.join(120)
            assert p.exitcode == 0
        answers = [a for out in outs for a in json.loads(out.read_text())]
        seen = stats(sb.url)["requests_by_endpoint"]

        assert len(answers) == 50
        for answer in answers:  # each caller got its own symbol's slice
            assert answer["got"] == answer["asked"]
            assert answer["last"] > 0
            assert answer["level"] == "NONE"
        assert {a["source"] for a in answers} == {"batched"}
        # Binance prices a symbols list of up to 20 at weight 2 and 21-100 at 40: the 50
        # requests go out as 20 + 20 + 10 (weight 6), not 1 x 50 (40) nor 50 singles (100)
        assert seen[TICKERS] == 3
        assert ticker_weight(sb.url) == 6


def test_a_batch_that_fits_one_call_is_one_upstream_call(
    namespace: str, redis_client: redis.Redis
) -> None:
    with running_sandbox(symbols=SYMBOLS[:20]) as sb:
        client = ResilientAPIClient(
            redis_client, AppConfig.model_validate(config_for(sb.url, namespace, window=0.5))
        )

        def left() -> float:
            check = client.limiter.decide("binance", "public", weight=0, charge=False)
            return float(check.remaining["REQUEST_WEIGHT"])

        budget = left()

        async def ask_all() -> list[Any]:
            return list(
                await asyncio.gather(
                    *(
                        client.resilient_request("binance", "fetch_ticker", {"symbol": s})
                        for s in SYMBOLS[:20]
                    )
                )
            )

        answers = run_with(client, ask_all)
        assert [a.data["symbol"] for a in answers] == SYMBOLS[:20]
        assert stats(sb.url)["requests_by_endpoint"][TICKERS] == 1
        assert ticker_weight(sb.url) == 2
        # our limiter charged what the exchange charged: the list's 2 and the market list's 20
        assert budget - left() == 2 + 20


def test_a_failed_batch_gets_each_caller_the_single_call_handling(
    namespace: str, redis_client: redis.Redis
) -> None:
    symbols = SYMBOLS[:6]
    with running_sandbox(symbols=symbols) as sb:
        client = ResilientAPIClient(
            redis_client, AppConfig.model_validate(config_for(sb.url, namespace, window=0.3))
        )
        partial = FallbackConfig(level="partial", timeout=10)
        full = FallbackConfig(
            level="full", timeout=10, fallback_function=lambda error, **kw: {"symbol": "default"}
        )

        async def scenario() -> tuple[list[Any], list[Any]]:
            warm = await client.resilient_many("binance", "fetch_ticker", symbols[:3])
            assert all(a.level is FallbackLevel.NONE for a in warm.values())
            admin(sb.url, "faults", "PUT", [{"kind": "http_500", "endpoint": TICKERS}])
            before = stats(sb.url)["requests_by_endpoint"][TICKERS]
            calls = [
                client.resilient_request("binance", "fetch_ticker", {"symbol": s}, fc)
                for s, fc in zip(
                    symbols,
                    [partial, partial, partial, full, FallbackConfig(timeout=10), partial],
                    strict=True,
                )
            ]
            answers = list(await asyncio.gather(*calls, return_exceptions=True))
            after = stats(sb.url)["requests_by_endpoint"][TICKERS]
            return answers, [before, after]

        answers, (before, after) = run_with(client, scenario)
    # one batched call, retried once (max_attempts 2), for all six callers
    assert after - before == 2
    for cached in answers[:3]:  # warmed: their own cached slice, marked stale
        assert cached.level is FallbackLevel.PARTIAL
        assert cached.source == "cache"
        assert cached.stale
        assert "500" in cached.error or "Retryable" in cached.error
    assert answers[3].level is FallbackLevel.FULL
    assert answers[3].data == {"symbol": "default"}
    assert isinstance(answers[4], RetryableError)  # level none: the error, as a single call
    assert isinstance(answers[5], RetryableError)  # partial, nothing cached: the error


def test_an_unknown_symbol_fails_alone_and_never_reaches_the_exchange(
    namespace: str, redis_client: redis.Redis
) -> None:
    with running_sandbox(symbols=SYMBOLS[:4]) as sb:
        client = ResilientAPIClient(
            redis_client, AppConfig.model_validate(config_for(sb.url, namespace, window=0.3))
        )

        async def scenario() -> list[Any]:
            names = [*SYMBOLS[:4], "NOPE/USDT"]
            return list(
                await asyncio.gather(
                    *(
                        client.resilient_request("binance", "fetch_ticker", {"symbol": s})
                        for s in names
                    ),
                    return_exceptions=True,
                )
            )

        answers = run_with(client, scenario)
        seen = stats(sb.url)
    assert [a.data["symbol"] for a in answers[:4]] == SYMBOLS[:4]
    assert isinstance(answers[4], InvalidRequestError)
    assert "NOPE/USDT" in str(answers[4])
    assert seen["requests_by_endpoint"][TICKERS] == 1


def test_a_follower_whose_leader_vanished_asks_alone(
    namespace: str, redis_client: redis.Redis
) -> None:
    with running_sandbox(symbols=SYMBOLS[:2]) as sb:
        cfg = AppConfig.model_validate(config_for(sb.url, namespace, window=0.3))
        client = ResilientAPIClient(redis_client, cfg)
        client.batcher.lease = 0.5
        # a leader that opens the batch and then dies (never answers, lease lapses)
        dead = asyncio.run(client.batcher.join("binance:fetch_ticker", SYMBOLS[0]))
        assert dead.leader

        async def ask() -> Any:
            return await client.resilient_request("binance", "fetch_ticker", {"symbol": SYMBOLS[1]})

        started = time.monotonic()
        answer = run_with(client, ask)
        waited = time.monotonic() - started
        assert answer.data["symbol"] == SYMBOLS[1]
        assert answer.source == "exchange"
        assert waited >= 0.3  # it did wait for the dead leader's batch first
        assert stats(sb.url)["requests_by_endpoint"][TICKERS] == 1


#: The batch window of the one-caller test: long, so that not waiting for it is unmistakable.
WINDOW = 30.0


def test_many_symbols_from_one_caller_go_out_at_once_in_the_cheapest_calls(
    namespace: str, redis_client: redis.Redis
) -> None:
    with running_sandbox(symbols=SYMBOLS) as sb:
        client = ResilientAPIClient(
            redis_client, AppConfig.model_validate(config_for(sb.url, namespace, window=WINDOW))
        )

        async def scenario() -> tuple[dict[str, Any], float]:
            started = time.monotonic()
            answers = await client.resilient_many("binance", "fetch_ticker", SYMBOLS)
            return answers, time.monotonic() - started

        answers, took = run_with(client, scenario)
        assert {s: a.data["symbol"] for s, a in answers.items()} == {s: s for s in SYMBOLS}
        # a batch window far longer than the calls take: waiting for it would show, even on a
        # loaded machine
        assert took < WINDOW, "it waited for a batch window"
        assert stats(sb.url)["requests_by_endpoint"][TICKERS] == 3
        assert ticker_weight(sb.url) == 6


def test_batching_off_sends_single_calls(namespace: str, redis_client: redis.Redis) -> None:
    with running_sandbox(symbols=SYMBOLS[:5]) as sb:
        cfg = AppConfig.model_validate(config_for(sb.url, namespace, enabled=False))
        client = ResilientAPIClient(redis_client, cfg)

        async def scenario() -> dict[str, Any]:
            return await client.resilient_many("binance", "fetch_ticker", SYMBOLS[:5])

        answers = run_with(client, scenario)
        assert [a.data["symbol"] for a in answers.values()] == SYMBOLS[:5]
        assert stats(sb.url)["requests_by_endpoint"][TICKERS] == 5
        assert ticker_weight(sb.url) == 10


def test_a_lone_request_waits_the_idle_time_not_the_window(
    namespace: str, redis_client: redis.Redis
) -> None:
    with running_sandbox(symbols=SYMBOLS[:3]) as sb:
        config = config_for(sb.url, namespace, window=5.0, idle_timeout=0.1)
        client = ResilientAPIClient(redis_client, AppConfig.model_validate(config))

        async def scenario() -> tuple[list[Any], list[float]]:
            answers, took = [], []
            await client.markets("binance")  # market list loaded outside the timing
            for symbol in SYMBOLS[:3]:  # one after another: nobody to wait for
                started = time.monotonic()
                answers.append(
                    await client.resilient_request("binance", "fetch_ticker", {"symbol": symbol})
                )
                took.append(time.monotonic() - started)
            return answers, took

        answers, took = run_with(client, scenario)
        assert [a.data["symbol"] for a in answers] == SYMBOLS[:3]
        assert max(took) < 2.5  # closed when idle, long before the 5 s window
        assert stats(sb.url)["requests_by_endpoint"][TICKERS] == 3


def test_snapshots_of_a_watchlist_share_one_batched_read_while_it_is_fresh(
    namespace: str, redis_client: redis.Redis
) -> None:
    with running_sandbox(symbols=SYMBOLS) as sb:
        client = ResilientAPIClient(
            redis_client, AppConfig.model_validate(config_for(sb.url, namespace))
        )
        shared = FallbackConfig(level="partial", fresh_ttl=1.0)

        async def snapshots() -> list[Any]:
            return [
                await client.resilient_within("binance", "fetch_ticker", s, SYMBOLS, shared)
                for s in SYMBOLS
            ]

        async def scenario() -> tuple[list[Any], int, list[Any], int]:
            first = await snapshots()
            calls = stats(sb.url)["requests_by_endpoint"][TICKERS]
            await asyncio.sleep(1.2)  # the shared read is now too old: read again
            second = await snapshots()
            return first, calls, second, stats(sb.url)["requests_by_endpoint"][TICKERS]

        first, calls, second, calls_after = run_with(client, scenario)
    assert [a.data["symbol"] for a in first] == SYMBOLS
    assert [a.data["symbol"] for a in second] == SYMBOLS
    assert first[0].source == "batched"
    assert {a.source for a in first[1:]} == {"cache"}
    assert calls == 3  # 20 + 20 + 10 symbols for all fifty snapshots
    assert calls_after == 6


def test_concurrent_balance_reads_share_one_call_made_after_they_asked(
    namespace: str, redis_client: redis.Redis
) -> None:
    with running_sandbox(symbols=SYMBOLS[:2]) as sb:
        config = config_for(sb.url, namespace, window=0.5)
        config["exchanges"]["binance"].update(
            api_key="sandbox-key", api_secret="c2FuZGJveC1zZWNyZXRz"
        )
        config["trading"] = {
            "risk": {"max_notional_per_order": 1e6, "max_position_per_symbol": 1e6}
        }
        client = ResilientAPIClient(redis_client, AppConfig.model_validate(config))

        async def scenario() -> tuple[list[Any], Any]:
            await client.markets("binance")
            reads = [client.resilient_request("binance", "fetch_balance", {}) for _ in range(6)]
            together = list(await asyncio.gather(*reads))
            await client.resilient_request(
                "binance",
                "create_order",
                {"symbol": SYMBOLS[0], "type": "market", "side": "buy", "amount": 1},
            )
            after = await client.resilient_request("binance", "fetch_balance", {})
            return together, after

        together, after = run_with(client, scenario)
        calls = stats(sb.url)["requests_by_endpoint"]["GET /api/v3/account"]
    # six reads in one batch, the order gate's read for the risk guard, the read after
    assert calls == 3
    assert {a.source for a in together} == {"batched"}
    assert all(a.data["total"] == together[0].data["total"] for a in together)
    bought = SYMBOLS[0].split("/")[0]
    assert (after.data["total"].get(bought) or 0) > (together[0].data["total"].get(bought) or 0)


def test_with_the_breaker_open_a_batched_request_fails_over_at_once(
    namespace: str, redis_client: redis.Redis
) -> None:
    with running_sandbox(symbols=SYMBOLS[:2]) as sb:
        config = config_for(sb.url, namespace, window=5.0)
        config["exchanges"]["binance"]["circuit_breaker"] = {
            "failure_threshold": 2,
            "recovery_timeout": 30,
        }
        client = ResilientAPIClient(redis_client, AppConfig.model_validate(config))
        breaker = client.breaker("binance", "public")
        for _ in range(2):
            asyncio.run(breaker.record(RetryableError("upstream 500")))
        assert breaker.state() == "open"
        full = FallbackConfig(level="full", fallback_function=lambda error, **kw: {"x": 1})

        async def ask() -> tuple[Any, float]:
            started = time.monotonic()
            answer = await client.resilient_request(
                "binance", "fetch_ticker", {"symbol": SYMBOLS[0]}, full
            )
            return answer, time.monotonic() - started

        answer, took = run_with(client, ask)
        seen = stats(sb.url)["requests_by_endpoint"]
    assert answer.level is FallbackLevel.FULL
    assert "CircuitOpenError" in answer.error
    assert took < 2.5  # did not wait for the 5 s batch window
    assert breaker.state() == "open"  # the check took no half-open trial
    assert TICKERS not in seen


def test_high_priority_reads_batch_apart_and_spend_the_reserve(
    namespace: str, redis_client: redis.Redis
) -> None:
    with running_sandbox(symbols=SYMBOLS[:2]) as sb:
        config = config_for(sb.url, namespace, window=0.3)
        config["exchanges"]["binance"]["rate_limits"] = [
            {"type": "fixed_window", "name": "REQUEST_WEIGHT", "limit": 1000, "window": 60}
        ]
        config["rate_limiting"] = {"high_priority_reserve": 0.3, "max_wait": 0.5}
        client = ResilientAPIClient(redis_client, AppConfig.model_validate(config))
        ticker = {"symbol": SYMBOLS[0]}

        async def scenario() -> tuple[Any, Any, list[str]]:
            await client.markets("binance")  # weight 20
            left = client.limiter.decide("binance", "public", charge=False).remaining
            # leave 299: less than a medium ticker (2) plus the reserve (300) needs
            client.limiter.decide("binance", "public", weight=left["REQUEST_WEIGHT"] - 299)
            medium = await asyncio.gather(
                client.resilient_request("binance", "fetch_ticker", ticker),
                return_exceptions=True,
            )
            with request_priority(Priority.HIGH):
                high = await client.resilient_request("binance", "fetch_ticker", ticker)
            kinds = [
                k.decode()
                for k in redis_client.scan_iter(match=f"{namespace}{{batch:*}}:*:members")
            ]
            return medium[0], high, kinds

        medium, high, kinds = run_with(client, scenario)
    assert isinstance(medium, RateLimitedError)  # medium may not touch the reserve
    assert high.data["symbol"] == SYMBOLS[0]  # high may
    assert any("fetch_ticker:high}" in k for k in kinds), kinds  # a batch of its own
