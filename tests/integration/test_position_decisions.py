"""Position-aware decisions on real workers and the sandbox: a symbol is entered once.

Real Redis, real ``celery worker`` processes, the sandbox over HTTP with unmodified ccxt;
the rules strategist (no LLM configured). An uptrend makes every signal a buy, a downtrend
every signal a sell.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from core.keys import KeySpace
from resilience.ledger import Fill, Ledger, PlanRef
from tests.integration.sandbox_fixtures import admin, running_sandbox
from tests.integration.test_agents_cycle import analyse, reports, uptrend
from tests.integration.workers import worker_fleet

pytestmark = pytest.mark.integration


def downtrend(tmp: Path) -> Path:
    """Write a steady-downtrend candle file for the sandbox: every signal becomes a sell."""
    candles = tmp / "downtrend.csv"
    candles.write_text(
        "".join(
            f"{i},{100 * 0.9998**i:.4f},{100 * 0.9998**i * 1.0005:.4f},"
            f"{100 * 0.9998**i * 0.999:.4f},{100 * 0.9998 ** (i + 1):.4f},5\n"
            for i in range(6000)
        )
    )
    return candles


def config_file(tmp: Path, url: str, symbols: list[str]) -> Path:
    config = {
        "exchanges": {"binance": {"base_url": url}},
        "watchlist": [{"exchange": "binance", "symbols": symbols}],
        "news": {"files": []},
        "reports": {"dir": str(tmp / "reports")},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_analyses(
    redis_url: str, namespace: str, tmp: Path, config: Path, runs: int
) -> list[dict[str, Any]]:
    """Run ``runs`` analyses in a row on one fleet; return the reports, oldest run first."""
    with worker_fleet(redis_url, namespace, tmp, config=config) as fleet:
        fleet.start("agents", concurrency=2)
        for _ in range(runs):
            run = analyse(fleet.env(), config)
            output, _ = run.communicate(timeout=180)
            assert run.returncode == 0, output
    return sorted(reports(tmp), key=lambda r: (r["run_id"], r["symbol"]))


def posted(url: str) -> int:
    return int(admin(url, "stats")["requests_by_endpoint"].get("POST /api/v3/order", 0))


def test_two_runs_on_an_uptrend_enter_each_symbol_once(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    symbols = ["BTC/USDT", "ETH/USDT"]
    with running_sandbox(
        starting_balances={"USDT": 10000},
        candles_file=str(uptrend(tmp_path)),
        history_days=5,
        symbols=symbols,
    ) as sb:
        config = config_file(tmp_path, sb.url, symbols)
        found = run_analyses(redis_url, namespace, tmp_path, config, runs=2)
        orders = posted(sb.url)
    first, second = found[:2], found[2:]
    assert [r["plan"]["target"] for r in first] == ["open", "open"]
    assert all(r["execution"]["order"]["status"] == "closed" for r in first)
    for report in second:
        plan = report["plan"]
        assert (plan["signal"], plan["target"], plan["action"]) == ("buy", "hold", "hold"), plan
        assert plan["position"]["side"] == "long" and "order" not in report["execution"]
    assert orders == 2, "one order per symbol over two runs"
    ledger = Ledger(redis_client, KeySpace(namespace))
    assert [len(p.fills) for p in ledger.positions("binance")] == [1, 1]
    page = (tmp_path / "reports" / second[0]["run_id"] / "binance_BTCUSDT.md").read_text()
    assert "Position seen: long " in page and "signal buy; target hold." in page


def test_a_sell_signal_with_no_position_sends_nothing(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    # the account holds SOL the fleet never bought: it is not the fleet's to sell
    with running_sandbox(
        starting_balances={"USDT": 10000, "SOL": 50},
        candles_file=str(downtrend(tmp_path)),
        history_days=5,
        symbols=["SOL/USDT"],
    ) as sb:
        config = config_file(tmp_path, sb.url, ["SOL/USDT"])
        (report,) = run_analyses(redis_url, namespace, tmp_path, config, runs=1)
        orders = posted(sb.url)
    plan = report["plan"]
    assert (plan["signal"], plan["target"], plan["action"]) == ("sell", "hold", "hold"), plan
    assert "nothing to sell" in plan["rationale"]
    assert orders == 0


def test_a_sell_signal_on_a_live_long_closes_it(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    ledger = Ledger(redis_client, KeySpace(namespace))
    with running_sandbox(
        starting_balances={"USDT": 10000, "SOL": 0.5},
        candles_file=str(downtrend(tmp_path)),
        history_days=5,
        symbols=["SOL/USDT"],
    ) as sb:
        # a long the fleet opened an hour's worth of plan ago (4h horizon: live)
        plan = PlanRef(run_id="earlier", horizon="4h")
        ledger.apply_fill("binance", "SOL/USDT", Fill("cai-earlier", "buy", 0.5, 40.0), plan=plan)
        config = config_file(tmp_path, sb.url, ["SOL/USDT"])
        (report,) = run_analyses(redis_url, namespace, tmp_path, config, runs=1)
        orders = posted(sb.url)
    plan_seen = report["plan"]
    assert (plan_seen["signal"], plan_seen["target"]) == ("sell", "close"), plan_seen
    assert plan_seen["action"] == "sell" and plan_seen["size"] == pytest.approx(0.5)
    order = report["execution"]["order"]
    assert order["side"] == "sell" and order["filled"] == pytest.approx(0.5)
    assert orders == 1
    assert ledger.position("binance", "SOL/USDT") is None
    assert report["execution"]["position"]["after"] is None
