"""``crypto-ai kill [--flatten]`` and ``kill --off`` on real workers and the sandbox.

Real Redis, real ``celery worker`` processes, the sandbox over HTTP with unmodified ccxt,
the command line in its own process.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest
import redis
import yaml

from core.config import AppConfig
from core.keys import KeySpace
from resilience import ResilientAPIClient
from resilience.ledger import Fill, Ledger
from tests.integration.sandbox_fixtures import admin, ccxt_client, running_sandbox
from tests.integration.test_agents_cycle import analyse, reports, uptrend
from tests.integration.workers import REPO_ROOT, WorkerFleet, worker_fleet

pytestmark = pytest.mark.integration

SYMBOLS = ["BTC/USDT", "ETH/USDT"]


def config_file(tmp: Path, url: str, namespace: str) -> Path:
    config = {
        "redis": {"key_prefix": namespace},
        "exchanges": {"binance": {"base_url": url}},
        "watchlist": [{"exchange": "binance", "symbols": SYMBOLS}],
        "news": {"files": []},
        "reports": {"dir": str(tmp / "reports")},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def cli(fleet: WorkerFleet, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", "kill", *args, "--config", str(config)],
        cwd=REPO_ROOT,
        env=fleet.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def run_once(fleet: WorkerFleet, config: Path) -> None:
    run = analyse(fleet.env(), config)
    output, _ = run.communicate(timeout=180)
    assert run.returncode == 0, output


def resting_buy(config: Path, redis_client: redis.Redis) -> str:
    """Place a limit buy 1.5% under the market through the gate; return its client id."""
    api = ResilientAPIClient(
        redis_client, AppConfig.model_validate(yaml.safe_load(config.read_text()))
    )

    async def place() -> str:
        try:
            last = (
                await api.resilient_request("binance", "fetch_ticker", {"symbol": "ETH/USDT"})
            ).data
            price = round(float(last["last"]) * 0.985, 2)
            params = {
                "symbol": "ETH/USDT",
                "type": "limit",
                "side": "buy",
                "amount": round(20 / price, 4),
                "price": price,
            }
            order = (await api.resilient_request("binance", "create_order", params)).data
            return str(order["clientOrderId"])
        finally:
            await api.close()

    return asyncio.run(place())


def exchange_state(url: str) -> tuple[list[Any], dict[str, float]]:
    """Return the sandbox account's open orders and the base balances it could still sell.

    What is below the market's amount step (a fee taken in the base asset) cannot be sold.
    """

    async def read() -> tuple[list[Any], dict[str, float]]:
        ex = ccxt_client(url)
        try:
            markets = await ex.load_markets()
            opened = [o for s in SYMBOLS for o in await ex.fetch_open_orders(s)]
            balance = await ex.fetch_balance()
            held = {s: float(balance["total"].get(s.split("/")[0]) or 0) for s in SYMBOLS}
            steps = {s: float(markets[s]["precision"]["amount"]) for s in SYMBOLS}
            return opened, {s: v for s, v in held.items() if v >= steps[s]}
        finally:
            await ex.close()

    return asyncio.run(read())


def audit(redis_client: redis.Redis, namespace: str) -> list[dict[str, str]]:
    entries = cast(list[Any], redis_client.xrange(KeySpace(namespace).kill_audit()))
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]


def test_kill_flatten_cancels_closes_stops_orders_and_off_lets_them_out(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    keys, ledger = KeySpace(namespace), Ledger(redis_client, KeySpace(namespace))
    with running_sandbox(
        starting_balances={"USDT": 10000},
        candles_file=str(uptrend(tmp_path)),
        history_days=5,
        symbols=SYMBOLS,
    ) as sb:
        config = config_file(tmp_path, sb.url, namespace)
        with worker_fleet(redis_url, namespace, tmp_path, config=config) as fleet:
            fleet.start("agents", concurrency=2)
            run_once(fleet, config)
            assert len(ledger.positions("binance")) == 2
            resting = resting_buy(config, redis_client)
            before, _ = exchange_state(sb.url)
            # the positions' protection (an OCO each) rests too: the close cancels it
            assert resting in [o["clientOrderId"] for o in before]
            flattened = cli(fleet, config, "--flatten")
            after, balances = exchange_state(sb.url)
            held_after = ledger.positions("binance")
            orders_after_kill = admin(sb.url, "stats")["requests_by_endpoint"].get(
                "POST /api/v3/order", 0
            )
            again = cli(fleet, config, "--flatten")
            # the switch is on: the next run places nothing (it would open both again)
            for path in (tmp_path / "reports").glob("*"):
                path.rename(tmp_path / f"old-{path.name}")
            run_once(fleet, config)
            stopped = reports(tmp_path)
            posted_stopped = admin(sb.url, "stats")["requests_by_endpoint"].get(
                "POST /api/v3/order", 0
            )
            off = cli(fleet, config, "--off")
            for path in (tmp_path / "reports").glob("*"):
                path.rename(tmp_path / f"older-{path.name}")
            run_once(fleet, config)
            resumed = reports(tmp_path)
    assert flattened.returncode == 0, flattened.stdout + flattened.stderr
    lines = flattened.stdout.splitlines()
    assert any(line.startswith(f"cancelled binance ETH/USDT {resting}") for line in lines), lines
    closed = [line for line in lines if line.startswith("closed binance ")]
    assert sorted(line.split()[2].rstrip(":") for line in closed) == SYMBOLS, lines
    assert (
        lines[-1].startswith("kill switch on (by ")
        and "1 orders cancelled, 2 positions closed" in lines[-1]
    )
    assert after == [] and balances == {}, (after, balances)
    assert held_after == []
    assert again.returncode == 0 and again.stdout.splitlines() == [
        "kill switch was already on: nothing left to do (no open order, no position)"
    ], again.stdout
    assert all(r["execution"]["risk"]["reasons"] == ["kill switch is on"] for r in stopped), [
        r["execution"] for r in stopped
    ]
    assert posted_stopped == orders_after_kill, "no order left the fleet with the switch on"
    assert off.returncode == 0 and off.stdout.startswith("kill switch off (by "), off.stdout
    assert not redis_client.exists(keys.kill_switch())
    assert all(r["execution"]["order"]["status"] == "closed" for r in resumed), resumed
    entries = audit(redis_client, namespace)
    assert [e["action"] for e in entries] == ["flatten", "flatten", "off"]
    first = entries[0]
    assert first["by"] and first["was_on"] == "0"
    assert [o["client_order_id"] for o in json.loads(first["cancelled"])] == [resting]
    assert sorted(p["symbol"] for p in json.loads(first["closed"])) == SYMBOLS
    assert json.loads(entries[1]["cancelled"]) == [] and json.loads(entries[1]["closed"]) == []


def test_kill_without_flatten_cancels_orders_and_keeps_positions(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    ledger = Ledger(redis_client, KeySpace(namespace))
    with running_sandbox(
        starting_balances={"USDT": 10000, "BTC": 0.1},
        candles_file=str(uptrend(tmp_path)),
        history_days=5,
        symbols=SYMBOLS,
    ) as sb:
        ledger.apply_fill("binance", "BTC/USDT", Fill("cai-held", "buy", 0.1, 300.0))
        config = config_file(tmp_path, sb.url, namespace)
        with worker_fleet(redis_url, namespace, tmp_path, config=config) as fleet:
            resting = resting_buy(config, redis_client)
            killed = cli(fleet, config)
            after, _ = exchange_state(sb.url)
    assert killed.returncode == 0, killed.stdout + killed.stderr
    lines = killed.stdout.splitlines()
    assert lines[0].startswith(f"cancelled binance ETH/USDT {resting}: limit buy "), lines
    assert lines[-1].endswith(": 1 orders cancelled") and after == []
    assert [p.symbol for p in ledger.positions("binance")] == ["BTC/USDT"]


def test_kill_flatten_in_paper_mode_closes_the_paper_wallet_and_sends_nothing(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    ledger = Ledger(redis_client, KeySpace(namespace))
    with running_sandbox(starting_balances={"USDT": 10000}, symbols=SYMBOLS) as sb:
        # a URL on this host that the config says is a real exchange: the paper wallet
        config = config_file(tmp_path, sb.url, namespace)
        settings = yaml.safe_load(config.read_text())
        settings["exchanges"]["binance"]["is_sandbox"] = False
        config.write_text(yaml.safe_dump(settings))
        fill = Fill("cai-paper", "buy", 0.001, 50000.0)
        ledger.apply_fill("binance", "BTC/USDT", fill, mode="paper", wallet={"USDT": 10000})
        with worker_fleet(redis_url, namespace, tmp_path, config=config) as fleet:
            killed = cli(fleet, config, "--flatten")
        requests = admin(sb.url, "stats")["requests_by_endpoint"]
    assert killed.returncode == 0, killed.stdout + killed.stderr
    lines = killed.stdout.splitlines()
    assert lines[0].startswith("closed binance BTC/USDT: long 0.001 "), lines
    assert lines[-1].endswith(": 0 orders cancelled, 1 positions closed"), lines
    assert ledger.positions("binance") == [] and ledger.wallet("binance").get("BTC", 0) < 1e-9
    assert not [e for e in requests if "order" in e.lower()], requests
