"""Exchange weight of one reconciliation run as the fleet's order history grows.

For 10, 100 and 1,000 past orders (all but ``--open`` market orders that filled, the rest
resting limit orders) on a fresh Binance sandbox and a fresh Redis namespace, the history
is placed over HTTP and recorded as the execution stage records it. Then, each measured by
the weight the sandbox charged (it prices requests as Binance does):

- baseline, today's method: every recorded order asked for by client order id (4 weight
  each) plus the open orders of each watched symbol;
- ours, the first run after an upgrade (it indexes the execution records once) and a
  steady-state run after it (only what can have changed: orders not final, open orders,
  the open positions' protection, fills since the last check, balances, the open
  positions' fills).

With ``--positions``, a position is also opened on every watched symbol through the order
gate, with a plan's stop-loss and take-profit, and protected by an OCO, as the execution
stage does: the runs then check that protection and the positions' fills too.

Run: ``python -m bench.reconcile [--sizes 10 100 1000] [--open 3] [--positions]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from collections.abc import Coroutine
from typing import Any, TypeVar, cast

import aiohttp
import redis

from bench.common import redis_for_bench
from core.config import AppConfig, SandboxConfig
from core.keys import KeySpace
from exchanges.ccxt_factory import make_exchange
from resilience import ResilientAPIClient
from resilience.exits import protect
from resilience.ledger import PlanRef
from resilience.order_request import OrderRequest
from sandbox.admin import admin
from sandbox.server import Sandbox
from sandbox.thread import SandboxThread
from tasks.reconcile import reconcile

T = TypeVar("T")
SYMBOLS = ["SOL/USDT", "ETH/USDT"]
#: Amounts worth about 15 USDT at the sandbox's start prices.
AMOUNTS = {"SOL/USDT": 0.1, "ETH/USDT": 0.005}
#: Positions worth about 60-75 USDT: after the fee in the base asset, still a sellable amount.
HELD = {"SOL/USDT": 0.5, "ETH/USDT": 0.02}


class LocalRuntime:
    """The task runtime in this process: a config, one Redis and one exchange client."""

    def __init__(self, config: AppConfig, redis_url: str) -> None:
        self._config, self._redis = config, redis.Redis.from_url(redis_url)
        self._client: ResilientAPIClient | None = None

    def config(self) -> AppConfig:
        """Return the config."""
        return self._config

    def redis_client(self) -> redis.Redis:
        """Return the Redis client."""
        return self._redis

    def keyspace(self) -> KeySpace:
        """Return the key builder."""
        return KeySpace(self._config.redis.key_prefix)

    def exchange_client(self) -> ResilientAPIClient:
        """Return the exchange client (built on first use, on the running loop)."""
        if self._client is None:
            self._client = ResilientAPIClient(self._redis, self._config)
        return self._client

    def http_session(self) -> aiohttp.ClientSession:
        """Not used by reconciliation."""
        raise NotImplementedError

    def llm(self) -> None:
        """Not used by reconciliation."""
        return None

    def run_async(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Not used: the bench runs its own loop."""
        raise NotImplementedError

    async def close(self) -> None:
        """Close the exchange client."""
        if self._client is not None:
            await self._client.close()
            self._client = None


def fleet_config(
    url: str, prefix: str, symbols: list[str] = SYMBOLS, trading: dict[str, Any] | None = None
) -> AppConfig:
    """Return a fleet config on the sandbox at ``url`` watching ``symbols``."""
    return AppConfig.model_validate(
        {
            "redis": {"key_prefix": prefix},
            "exchanges": {"binance": {"base_url": url}},
            "watchlist": [{"exchange": "binance", "symbols": symbols}],
            "trading": trading or {},
        }
    )


def sandbox_settings(orders: int) -> dict[str, Any]:
    """Return sandbox settings with room for ``orders`` orders placed at once."""
    return {
        "symbols": SYMBOLS,
        "history_days": 1,
        "starting_balances": {"USDT": 1_000_000.0},
        "limits": {"orders_per_10s": max(100, 2 * orders), "request_weight_per_minute": 60000},
    }


async def place_history(
    url: str, client: redis.Redis, keys: KeySpace, count: int, resting: int
) -> list[dict[str, Any]]:
    """Place ``count`` orders (``resting`` of them limit orders far below the market) and
    record each as the execution stage does; return the ccxt orders."""
    ex = make_exchange(
        "binance",
        AppConfig.model_validate({"exchanges": {"binance": {"base_url": url}}}).exchanges[
            "binance"
        ],
    )
    placed: list[dict[str, Any]] = []
    try:
        await ex.load_markets()
        for n in range(count):
            symbol = SYMBOLS[n % len(SYMBOLS)]
            cid = f"cai-h{n}-{uuid.uuid4().hex[:8]}"
            params = {"newClientOrderId": cid}
            if n < resting:
                ticker = await ex.fetch_ticker(symbol)
                price = float(ex.price_to_precision(symbol, ticker["last"] * 0.5))
                order = await ex.create_order(
                    symbol, "limit", "buy", AMOUNTS[symbol], price, params
                )
            else:
                order = await ex.create_order(
                    symbol, "market", "buy", AMOUNTS[symbol], None, params
                )
            placed.append(order)
            record = {"action": "buy", "mode": "sandbox", "order": {**order, "source": "exchange"}}
            key = keys.stage(f"r{n}", "binance", symbol, "execution")
            client.set(key, json.dumps(record, default=str))
    finally:
        await ex.close()
    return placed


async def protected_positions(rt: LocalRuntime, exchange: str = "binance") -> None:
    """Open a position on every watched symbol through the order gate, protected by an OCO."""
    client = rt.exchange_client()
    for symbol in rt.config().watched(exchange):
        ticker = await client.resilient_request(exchange, "fetch_ticker", {"symbol": symbol})
        price = float(ticker.data["last"])
        params = {"symbol": symbol, "type": "market", "side": "buy", "amount": HELD[symbol]}
        run_id = f"bench-{uuid.uuid4().hex[:8]}"
        request = OrderRequest(
            exchange=exchange,
            endpoint="create_order",
            symbol=symbol,
            side="buy",
            type="market",
            amount=HELD[symbol],
            client_order_id=f"cai-{run_id}",
            params=params,
            origin=f"execution:{run_id}",
        )
        await client.orders.submit(request, PlanRef(run_id, price * 0.9, price * 1.1, "1d"))
        how = await protect(client, exchange, symbol)
        if (how or {}).get("kind") != "exchange":
            raise RuntimeError(f"{symbol}: not protected by an OCO ({how})")


def charged(url: str) -> float:
    """Return the weight the sandbox has charged its clients so far."""
    return float(sum(c["weight_total"] for c in admin(url, "stats")["clients"].values()))


async def ask_every_record(rt: LocalRuntime, exchange: str) -> None:
    """Today's method (the baseline): ask every recorded order, then the open orders."""
    client, keys = rt.exchange_client(), rt.keyspace()
    redis_client = rt.redis_client()
    symbols = rt.config().watched(exchange)
    for key in redis_client.scan_iter(match=keys.stage_pattern(exchange, "execution")):
        raw = cast(bytes | None, redis_client.get(key))
        order = json.loads(raw or b"{}").get("order") or {}
        if order.get("clientOrderId") and order.get("symbol") in symbols:
            await client.find_order(exchange, order["symbol"], order["clientOrderId"])
    for symbol in symbols:
        await client.resilient_request(exchange, "fetch_open_orders", {"symbol": symbol})


async def measure(
    size: int, resting: int, redis_url: str, positions: bool = False
) -> dict[str, float]:
    """Return the weight of the baseline, our first run and our steady run for one size."""
    sandbox = SandboxThread(
        Sandbox(SandboxConfig.model_validate(sandbox_settings(size)), name="binance")
    ).start()
    prefix = f"bench-rec-{uuid.uuid4().hex[:8]}:"
    # the history's buys are the account's: the positions' entries must pass the guard
    trading = {"risk": {"max_position_per_symbol": 1e9}} if positions else None
    rt = LocalRuntime(fleet_config(sandbox.url, prefix, trading=trading), redis_url)
    figures: dict[str, float] = {}
    try:
        await place_history(sandbox.url, rt.redis_client(), rt.keyspace(), size, resting)
        await rt.exchange_client().markets("binance")  # markets are loaded once per process
        if positions:
            await protected_positions(rt)
        before = charged(sandbox.url)
        await ask_every_record(rt, "binance")
        figures["baseline"] = charged(sandbox.url) - before
        for name in ("first", "steady"):
            before = charged(sandbox.url)
            summary = await reconcile(rt, "binance")
            figures[name] = charged(sandbox.url) - before
            figures[f"{name} metered"] = summary["weight"]
            figures[f"{name} checked"] = summary["checked"]
            figures[f"{name} repairs"] = len(summary["protection"]) + len(summary["drift"])
            extras = ("GET /api/v3/myTrades", "GET /api/v3/account")
            by_scope = summary["weight_by_scope"]
            figures[f"{name} orders"] = summary["weight"] - sum(by_scope.get(s, 0) for s in extras)
    finally:
        await rt.close()
        keys = list(rt.redis_client().scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            rt.redis_client().delete(*keys)
        sandbox.stop()
    return figures


def main() -> None:
    """Measure every size; print the table and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--open", type=int, default=3, help="resting limit orders per history")
    parser.add_argument(
        "--positions", action="store_true", help="an OCO-protected position on every symbol"
    )
    args = parser.parse_args()
    with redis_for_bench() as url:
        rows = [(n, asyncio.run(measure(n, args.open, url, args.positions))) for n in args.sizes]
    held = f", {len(SYMBOLS)} protected positions" if args.positions else ""
    print(
        f"weight of one reconcile run, {len(SYMBOLS)} watched symbols, {args.open} open orders"
        + held
    )
    print(
        f"  {'past orders':>11}  {'baseline: ask every record':>26}  {'ours, first run':>15}  "
        f"{'ours, steady':>12}  {'of which orders':>15}  {'steady / baseline':>17}"
    )
    for n, f in rows:
        print(
            f"  {n:>11}  {f['baseline']:>26.0f}  {f['first']:>15.0f}  {f['steady']:>12.0f}  "
            f"{f['steady orders']:>15.0f}  {f['steady'] / f['baseline']:>17.3f}"
        )
        if f["first repairs"] or f["steady repairs"]:
            print(
                f"    (protection or drift reported: {f['first repairs']:.0f} / "
                f"{f['steady repairs']:.0f})"
            )
        if f["steady"] != f["steady metered"] or f["first"] != f["first metered"]:
            print(
                f"    (the limiter priced them {f['first metered']:.0f} / "
                f"{f['steady metered']:.0f})"
            )
    first, last = rows[0][1], rows[-1][1]
    print(
        f"  {rows[-1][0]} vs {rows[0][0]} past orders: "
        f"baseline x{last['baseline'] / first['baseline']:.1f}, "
        f"ours (steady) x{last['steady'] / first['steady']:.2f}"
    )


if __name__ == "__main__":
    main()
