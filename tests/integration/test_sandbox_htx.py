"""The HTX sandbox dialect as unmodified ccxt ``htx`` (and a raw HTTP client) sees it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import urllib.request
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import ccxt
import pytest
import redis

from core.config import AppConfig, ExchangeConfig
from core.errors import MalformedResponseError
from exchanges.ccxt_factory import make_exchange
from exchanges.profiles import profile
from resilience import FallbackConfig, ResilientAPIClient
from tests.integration.sandbox_fixtures import admin, running_sandbox

pytestmark = pytest.mark.integration

TICKER = "GET /market/detail/merged"


def htx_client(url: str, secret: str = "c2FuZGJveC1zZWNyZXRz", **extra: Any) -> Any:
    """Return ccxt.async_support.htx as the fleet builds it, its URLs at the sandbox."""
    config = ExchangeConfig(
        ccxt_id="htx",
        base_url=url,
        api_key="sandbox-key",
        api_secret=secret,
        password="sandbox-passphrase",
    )
    return make_exchange("htx", config, **extra)


def raw(url: str, path: str, query: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    """GET ``path`` without ccxt; return (status, headers, JSON body)."""
    target = f"{url}{path}" + (f"?{urlencode(query)}" if query else "")
    try:
        with urllib.request.urlopen(target, timeout=5) as answer:
            return answer.status, answer.headers, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, json.loads(exc.read())


def signed_query(path: str, host: str, secret: str = "c2FuZGJveC1zZWNyZXRz") -> dict[str, str]:
    """Sign a GET the way HTX documents (signature version 2) over ``host``."""
    query = {
        "AccessKeyId": "sandbox-key",
        "SignatureMethod": "HmacSHA256",
        "SignatureVersion": "2",
        "Timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
    }
    payload = "\n".join(["GET", host, path, urlencode(sorted(query.items()))])
    digest = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()
    return {**query, "Signature": base64.b64encode(digest).decode()}


async def _at_window_start(length: float) -> None:
    await asyncio.sleep(length - time.time() % length + 0.02)


def test_unmodified_ccxt_does_every_fleet_operation_on_spot_only() -> None:
    async def scenario(url: str) -> dict[str, Any]:
        ex = htx_client(url)
        seen: dict[str, Any] = {}
        try:
            markets = await ex.load_markets()
            seen["markets"] = markets
            seen["ticker"] = await ex.fetch_ticker("BTC/USDT")
            seen["tickers"] = await ex.fetch_tickers()
            seen["book"] = await ex.fetch_order_book("BTC/USDT", 5)
            seen["ohlcv"] = await ex.fetch_ohlcv("BTC/USDT", "1m", limit=5)
            seen["balance"] = await ex.fetch_balance()
            cid = profile("htx").new_client_order_id()
            seen["cid"] = cid
            seen["sell"] = await ex.create_order(
                "BTC/USDT", "market", "sell", 0.001, None, {"clientOrderId": cid}
            )
            # HTX's market buy spends a quote amount: ccxt sends amount * price
            seen["buy"] = await ex.create_order("ETH/USDT", "market", "buy", 0.01, 3000)
            bid = seen["book"]["bids"][0][0]
            limit = await ex.create_order(
                "BTC/USDT", "limit", "buy", 0.001, round(bid * 0.95, 2), {"clientOrderId": "lim-1"}
            )
            seen["limit"] = limit
            seen["by_id"] = await ex.fetch_order(limit["id"], "BTC/USDT")
            seen["by_cid"] = await ex.fetch_order(None, "BTC/USDT", profile("htx").lookup("lim-1"))
            seen["open"] = await ex.fetch_open_orders("BTC/USDT")
            seen["cancel"] = await ex.cancel_order(limit["id"], "BTC/USDT")
            seen["after_cancel"] = await ex.fetch_order(limit["id"], "BTC/USDT")
            seen["sold"] = await ex.fetch_order(seen["sell"]["id"], "BTC/USDT")
            seen["trades"] = await ex.fetch_my_trades("BTC/USDT")
            with pytest.raises(ccxt.OrderNotFound):
                await ex.cancel_order(limit["id"], "BTC/USDT")
            with pytest.raises(ccxt.OrderNotFound):
                await ex.fetch_order(None, "BTC/USDT", {"clientOrderId": "never-placed"})
            with pytest.raises(ccxt.InsufficientFunds):
                await ex.create_order("BTC/USDT", "market", "sell", 5)
        finally:
            await ex.close()
        return seen

    with running_sandbox(dialect="htx") as sb:
        seen = asyncio.run(scenario(sb.url))
        stats = admin(sb.url, "stats")
    assert set(seen["markets"]) == {"BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT", "XRP/USDT"}
    assert all(m["spot"] and not m["contract"] for m in seen["markets"].values())
    assert not any("contract" in e or "swap" in e for e in stats["requests_by_endpoint"])
    ticker = seen["ticker"]
    assert ticker["bid"] < ticker["last"] < ticker["ask"] and ticker["timestamp"]
    assert set(seen["tickers"]) == set(seen["markets"])
    assert (
        len(seen["book"]["bids"]) == 5 and seen["book"]["bids"][0][0] < seen["book"]["asks"][0][0]
    )
    assert len(seen["ohlcv"]) == 5 and seen["ohlcv"][0][0] < seen["ohlcv"][-1][0]
    assert seen["balance"]["USDT"]["free"] == 10000.0 and seen["balance"]["BTC"]["total"] == 0.1
    assert seen["sold"]["status"] == "closed" and seen["sold"]["filled"] == 0.001
    assert seen["sold"]["clientOrderId"] == seen["cid"]
    assert seen["by_id"]["status"] == "open" and seen["by_id"]["type"] == "limit"
    assert (
        seen["by_cid"]["id"] == seen["limit"]["id"] and seen["by_cid"]["clientOrderId"] == "lim-1"
    )
    assert [o["id"] for o in seen["open"]] == [seen["limit"]["id"]]
    assert seen["cancel"]["id"] == seen["limit"]["id"]
    assert seen["after_cancel"]["status"] == "canceled"
    sides = sorted(t["side"] for t in seen["trades"])
    assert sides == ["sell"] and seen["trades"][0]["order"] == seen["sell"]["id"]
    assert stats["orders"] == {"sandbox-key": 3}
    assert stats["violations"] == 0


def test_a_wrong_secret_is_refused_and_the_signed_host_is_htxs() -> None:
    async def scenario(url: str) -> str:
        ex = htx_client(url, secret="not-the-secret")
        try:
            await ex.load_markets()  # public: no signature
            with pytest.raises(ccxt.AuthenticationError) as refused:
                await ex.fetch_balance()
            return str(refused.value)
        finally:
            await ex.close()

    with running_sandbox(dialect="htx") as sb:
        message = asyncio.run(scenario(sb.url))
        path = "/v1/account/accounts"
        host = sb.url.split("//", 1)[1]
        over_htx = raw(sb.url, path, signed_query(path, "api.huobi.pro"))
        over_host = raw(sb.url, path, signed_query(path, host))
        elsewhere = raw(sb.url, path, signed_query(path, "api.example.com"))
    assert "api-signature-not-valid" in message
    assert over_htx[0] == 200 and over_htx[2]["status"] == "ok"
    assert over_host[2]["status"] == "ok"
    assert elsewhere[0] == 200 and elsewhere[2] == {
        "status": "error",
        "err-code": "api-signature-not-valid",
        "err-msg": "Signature not valid: Verification failure [验签失败]",
        "data": None,
    }


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("http_500", ccxt.OperationFailed),  # gateway-internal-error: ExchangeNotAvailable
        ("http_503", ccxt.OperationFailed),  # system-maintenance: OnMaintenance
        ("hang", ccxt.RequestTimeout),
        ("clock_skew", ccxt.AuthenticationError),
    ],
)
def test_each_fault_mode_reaches_ccxt_as_htx_would_answer(kind: str, error: type) -> None:
    endpoint = "GET /v1/account/accounts" if kind == "clock_skew" else TICKER

    async def scenario(url: str) -> None:
        ex = htx_client(url, timeout_ms=1500)  # under the 3 s hang, over a loaded answer
        try:
            await ex.load_markets()
            admin(
                url,
                "faults",
                "PUT",
                [{"kind": kind, "endpoint": endpoint, "seconds": 3, "count": 1}],
            )
            call = ex.fetch_balance if kind == "clock_skew" else ex.fetch_ticker
            args = () if kind == "clock_skew" else ("BTC/USDT",)
            with pytest.raises(error):
                await call(*args)
            assert await call(*args), "count=1: the next call works"
        finally:
            await ex.close()

    with running_sandbox(dialect="htx") as sb:
        asyncio.run(scenario(sb.url))
        assert admin(sb.url, "stats")["faults_injected"] == {kind: 1}


def test_malformed_json_is_a_malformed_response_through_the_fleets_gateway(
    redis_client: redis.Redis, namespace: str
) -> None:
    faults = [{"kind": "malformed_json", "endpoint": TICKER, "rate": 1.0}]
    with running_sandbox(dialect="htx", faults=faults) as sb:
        config = AppConfig.model_validate(
            {
                "redis": {"key_prefix": namespace},
                "exchanges": {"htx": {"base_url": sb.url}},
                "retry_strategies": {"default": {"max_attempts": 1}},
            }
        )
        client = ResilientAPIClient(redis_client, config)

        async def ask() -> BaseException | None:
            try:
                await client.resilient_request(
                    "htx", "fetch_ticker", {"symbol": "BTC/USDT"}, FallbackConfig(level="none")
                )
            except Exception as exc:  # the test judges it
                return exc
            finally:
                await client.close()
            return None

        error = asyncio.run(ask())
    chain = []
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    assert any(isinstance(e, MalformedResponseError) for e in chain), chain


def test_market_data_over_the_ip_limit_gets_429_then_a_lockout() -> None:
    limits = {"overrides": {"public_per_1s": 5}, "ban_after": 3, "ban_seconds": 4.0}

    async def scenario(url: str) -> tuple[int, list[str]]:
        ex = htx_client(url)
        ok, refused = 0, []
        try:
            await ex.load_markets()
            await _at_window_start(1.0)
            while True:
                try:
                    await ex.fetch_ticker("BTC/USDT")
                    ok += 1
                except ccxt.RateLimitExceeded as exc:
                    refused.append(str(exc))
                    break
            for _ in range(2):  # ban_after=3: the third refusal in the interval locks out
                with pytest.raises(ccxt.RateLimitExceeded):
                    await ex.fetch_ticker("BTC/USDT")
            await asyncio.sleep(1.1)  # a new interval, but still locked out
            with pytest.raises(ccxt.RateLimitExceeded):
                await ex.fetch_ticker("BTC/USDT")
        finally:
            await ex.close()
        return ok, refused

    with running_sandbox(dialect="htx", limits=limits) as sb:
        ok, refused = asyncio.run(scenario(sb.url))
        status, headers, body = raw(sb.url, "/market/detail/merged", {"symbol": "btcusdt"})
        stats = admin(sb.url, "stats")
    assert ok == 5, "exactly the limit per second passes"
    assert "request limit" in refused[0]
    assert status == 429 and body["status"] == "error"
    assert body["err-code"] == "invalid-parameter" and body["err-msg"] == "request limit"
    assert int(headers["X-HB-RateLimit-Requests-Remain"]) == 0
    client = stats["clients"]["127.0.0.1"]
    assert client["lockouts"] == 1 and client["locked_out"] == 2
    assert stats["violations"] == client["limited"] == 5


def test_private_endpoints_count_per_uid_and_endpoint_with_htx_headers() -> None:
    limits = {"overrides": {"balance_per_2s": 3}}

    async def scenario(url: str) -> tuple[list[tuple[int, int]], str, Any, float]:
        ex = htx_client(url)
        seen = []
        try:
            await ex.load_markets()
            await ex.load_accounts()
            await _at_window_start(2.0)
            for _ in range(3):
                await ex.fetch_balance()
                h = ex.last_response_headers
                seen.append(
                    (
                        int(h["X-HB-RateLimit-Requests-Remain"]),
                        int(h["X-HB-RateLimit-Requests-Expire"]),
                    )
                )
            with pytest.raises(ccxt.RateLimitExceeded) as refused:
                await ex.fetch_balance()
            headers = dict(ex.last_response_headers)
            throttle = profile("htx").throttled(200, headers, ex.last_http_response)
            # the other endpoints of the same UID have their own count
            assert await ex.fetch_open_orders("BTC/USDT") == []
        finally:
            await ex.close()
        return seen, str(refused.value), throttle, time.time()

    with running_sandbox(dialect="htx", limits=limits) as sb:
        seen, refused, throttle, at = asyncio.run(scenario(sb.url))
        stats = admin(sb.url, "stats")
    assert [r for r, _ in seen] == [2, 1, 0]
    ends = seen[0][1] / 1000
    assert len({e for _, e in seen}) == 1 and ends % 2 == 0 and 0 < ends - at <= 2
    assert "base-request-exceed-frequency-limit" in refused
    assert throttle is not None and throttle.pool is None and 0 < throttle.retry_after <= 2
    key = stats["clients"]["sandbox-key"]
    assert key["limited"] == 1 and stats["violations"] == 1


def test_the_profile_reads_htxs_throttle_answers() -> None:
    rules = profile("htx")
    soon = str(int((time.time() + 1.5) * 1000))
    # the last request of an interval: the pool is used up (its count follows), no overrun
    spent = {"X-HB-RateLimit-Requests-Remain": "0", "X-HB-RateLimit-Requests-Expire": soon}
    assert rules.throttled(200, spent, '{"status":"ok","data":[]}') is None
    refused = '{"status":"error","err-code":"base-request-exceed-frequency-limit"}'
    over = rules.throttled(200, spent, refused)
    assert over is not None and over.pool is None and 1.0 < (over.retry_after or 0) <= 1.5
    left = {"X-HB-RateLimit-Requests-Remain": "7", "X-HB-RateLimit-Requests-Expire": soon}
    assert rules.throttled(200, left, '{"status":"ok","data":[]}') is None
    body = '{"status":"error","err-code":"invalid-parameter","err-msg":"request limit"}'
    public = rules.throttled(429, {}, body)
    assert public is not None and public.pool == "PUBLIC" and public.status == 429
    assert rules.new_client_order_id().startswith("cai")
    assert len(rules.new_client_order_id()) == 35
