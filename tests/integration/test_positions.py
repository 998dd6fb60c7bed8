"""The position ledger on real workers and the sandbox: fills become positions, once each.

Real Redis, real ``celery worker`` processes, the sandbox over HTTP with unmodified ccxt.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from core.keys import KeySpace
from resilience.ledger import Fill, Ledger
from tests.integration.sandbox_fixtures import admin, running_sandbox
from tests.integration.test_agents_cycle import analyse, reports, uptrend
from tests.integration.test_order_gate import direct, market_buy, settings
from tests.integration.workers import REPO_ROOT, worker_fleet

pytestmark = pytest.mark.integration


def fleet_config(tmp: Path, url: str, **exchange: Any) -> Path:
    config = {
        "exchanges": {"binance": {"base_url": url, **exchange}},
        "watchlist": [{"exchange": "binance", "symbols": ["BTC/USDT"]}],
        "news": {"files": []},
        "reports": {"dir": str(tmp / "reports")},
        "trading": {"paper": {"starting_balances": {"USDT": 1000}, "slippage_bps": 10}},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def uptrend_sandbox(tmp: Path) -> Any:
    """Return the sandbox of these tests: BTC/USDT on an uptrend, 10,000 USDT."""
    return running_sandbox(
        starting_balances={"USDT": 10000},
        candles_file=str(uptrend(tmp)),
        history_days=5,
        symbols=["BTC/USDT"],
    )


Report = dict[str, Any]


def two_runs(
    redis_url: str, namespace: str, tmp: Path, config: Path
) -> tuple[Report, Report, list[Report]]:
    """Run two analyses in a row; return their reports, oldest first, and the positions."""
    with worker_fleet(redis_url, namespace, tmp, config=config) as fleet:
        fleet.start("agents", concurrency=2)
        for _ in range(2):
            run = analyse(fleet.env(), config)
            output, _ = run.communicate(timeout=180)
            assert run.returncode == 0, output
        env = fleet.env()
    listed = subprocess.run(
        [sys.executable, "-m", "workers.cli", "positions", "--json", "--config", str(config)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    first, second = sorted(reports(tmp), key=lambda r: r["run_id"])
    return first, second, json.loads(listed.stdout)


def test_a_run_that_buys_opens_one_position_that_the_next_run_sees_and_holds(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with uptrend_sandbox(tmp_path) as sb:
        config = fleet_config(tmp_path, sb.url)
        first, second, rows = two_runs(redis_url, namespace, tmp_path, config)
        entries = admin(sb.url, "stats")["requests_by_endpoint"].get("POST /api/v3/order", 0)
    fill = first["execution"]["order"]
    assert fill["status"] == "closed" and entries == 1, "one entry over two runs"
    assert second["plan"]["target"] == "hold" and "order" not in second["execution"], second
    position = Ledger(redis_client, KeySpace(namespace)).position("binance", "BTC/USDT")
    assert position is not None and position.side == "long"
    assert position.fills == [fill["clientOrderId"]]
    # the sandbox takes its fee in BTC: the position is what the account received
    bought = fill["filled"] - sum(x["cost"] for x in fill["fees"])
    assert position.amount == pytest.approx(bought)
    assert position.entry == pytest.approx(fill["cost"] / bought)
    assert position.run_id == first["run_id"] and position.stop_loss == first["plan"]["stop_loss"]
    assert first["execution"]["position"]["before"] is None
    assert second["execution"]["position"]["before"]["fills"] == [fill["clientOrderId"]]
    assert second["execution"]["position"]["after"]["amount"] == pytest.approx(bought)
    (row,) = rows
    assert row["symbol"] == "BTC/USDT" and row["last_source"] == "ticker", row
    assert row["entry"] == pytest.approx(position.entry) and row["last"] > 0
    assert row["unrealized_pnl"] == pytest.approx((row["last"] - row["entry"]) * row["amount"])
    assert row["run_id"] == first["run_id"] and row["protection"] == "exchange", row
    page = (tmp_path / "reports" / second["run_id"] / "binance_BTCUSDT.md").read_text()
    assert "Position before: long " in page and "Position after: long " in page


def test_the_paper_wallet_carries_balances_and_pnl_across_runs_and_sends_nothing(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with uptrend_sandbox(tmp_path) as sb:
        # a URL on this host that the config says is a real exchange: the paper wallet
        config = fleet_config(tmp_path, sb.url, is_sandbox=False)
        first, second, rows = two_runs(redis_url, namespace, tmp_path, config)
        posted = admin(sb.url, "stats")["requests_by_endpoint"].get("POST /api/v3/order", 0)
    ledger = Ledger(redis_client, KeySpace(namespace))
    fill = first["execution"]["order"]
    assert fill["status"] == "simulated"
    assert fill["average"] > first["market"]["ask"] * 0.99, "a paper buy fills at the ask"
    assert second["plan"]["target"] == "hold" and "order" not in second["execution"], second
    wallet = ledger.wallet("binance")
    assert wallet["USDT"] == pytest.approx(1000 - fill["cost"] * 1.001)  # the default 0.1% fee
    assert wallet["BTC"] == pytest.approx(fill["filled"])
    assert second["execution"]["position"]["before"]["amount"] == pytest.approx(fill["filled"])
    (row,) = rows
    assert row["amount"] == pytest.approx(wallet["BTC"]) and row["last_source"] == "ticker"
    assert row["unrealized_pnl"] == pytest.approx(
        (row["last"] - row["entry"]) * row["amount"] - fill["cost"] * 0.001
    )
    assert row["protection"] == "watch", "paper positions are protected by the fleet watch"
    assert posted == 0, "paper mode sent an order to an exchange that is not a sandbox"


def test_the_risk_guards_daily_loss_comes_from_the_ledger(
    namespace: str, redis_client: redis.Redis
) -> None:
    ledger = Ledger(redis_client, KeySpace(namespace))
    # earlier today: ETH bought at 1000 and sold at 700, a 300 USDT loss (the limit is 200)
    ledger.apply_fill("binance", "ETH/USDT", Fill("cai-a", "buy", 1.0, 1000.0))
    ledger.apply_fill("binance", "ETH/USDT", Fill("cai-b", "sell", 1.0, 700.0))
    with running_sandbox(starting_balances={"USDT": 100000}) as sb:
        config = settings(sb.url, namespace)
        refused = direct(config, redis_client, "create_order", market_buy(0.0005))
        posted = admin(sb.url, "stats")["requests_by_endpoint"].get("POST /api/v3/order", 0)
    assert "daily loss -300 reached the limit 200" in str(refused), refused
    assert posted == 0
