"""One run over five exchanges at once: a sandbox per exchange, a real worker fleet.

Every symbol on every exchange gets a report; every order that was placed went to its own
exchange's sandbox (routed per exchange), with that exchange's client order id.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import redis
import yaml

from exchanges.profiles import SUPPORTED
from tests.integration.sandbox_fixtures import admin, running_sandbox
from tests.integration.test_agents_cycle import analyse, reports, uptrend
from tests.integration.workers import worker_fleet

pytestmark = pytest.mark.integration
SYMBOLS = ["BTC/USDT", "ETH/USDT"]


def test_one_run_analyses_and_trades_on_all_five_exchanges(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    candles = str(uptrend(tmp_path))
    with contextlib.ExitStack() as stack:
        sandboxes = {
            ccxt_id: stack.enter_context(
                running_sandbox(
                    dialect=ccxt_id,
                    symbols=SYMBOLS,
                    candles_file=candles,
                    history_days=5,
                    starting_balances={"USDT": 10000},
                )
            )
            for ccxt_id in SUPPORTED
        }
        config = {
            "exchanges": {key: {"base_url": sb.url} for key, sb in sandboxes.items()},
            "watchlist": [{"exchange": key, "symbols": SYMBOLS} for key in sandboxes],
            "news": {"files": []},
            "reports": {"dir": str(tmp_path / "reports")},
        }
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        with worker_fleet(redis_url, namespace, tmp_path, config=path) as fleet:
            fleet.start("agents", concurrency=2)
            run = analyse(fleet.env(), path)
            output, _ = run.communicate(timeout=300)
        stats = {key: admin(sb.url, "stats") for key, sb in sandboxes.items()}
    assert run.returncode == 0, output
    found = reports(tmp_path)
    assert sorted((r["exchange"], r["symbol"]) for r in found) == sorted(
        (key, symbol) for key in SUPPORTED for symbol in SYMBOLS
    ), output
    for report in found:
        order = report["execution"].get("order")
        if not order:
            continue
        assert order["clientOrderId"].startswith("cai"), report
        # the order went to its own exchange's sandbox and nowhere else
        assert sum(stats[report["exchange"]]["orders"].values()) >= 1, report["exchange"]
    placed = {r["exchange"] for r in found if r["execution"].get("order")}
    assert placed == set(SUPPORTED), f"every exchange traded: {placed}\n{output}"
