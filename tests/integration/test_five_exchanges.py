"""One run over five exchanges at once: a sandbox per exchange, a real worker fleet.

Every symbol on every exchange gets a report; every order that was placed went to its own
exchange's sandbox (routed per exchange), with that exchange's client order id. Every
exchange is dedicated (``celery.dedicated_exchanges``): its tasks run on its own queues, on
the worker that consumes only them, and the shared tier queues carry none of them.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import redis
import yaml

from exchanges.profiles import SUPPORTED
from tests.integration.sandbox_fixtures import admin, running_sandbox
from tests.integration.slow_tasks import RECORD_DELIVERIES
from tests.integration.test_agents_cycle import analyse, reports, uptrend
from tests.integration.workers import worker_fleet

pytestmark = pytest.mark.integration
SYMBOLS = ["BTC/USDT", "ETH/USDT"]
TIERS = ("high", "medium", "low")


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
            "celery": {"dedicated_exchanges": list(SUPPORTED)},
        }
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        record = {RECORD_DELIVERIES: "1"}
        with worker_fleet(redis_url, namespace, tmp_path, config=path, **record) as fleet:
            workers = [fleet.start("tiers", ready=False)] + [
                fleet.start(key, queues=",".join(f"{key}.{t}" for t in TIERS), ready=False)
                for key in SUPPORTED
            ]
            for worker in workers:
                worker.wait_ready(timeout=60)
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
    ran = [x.decode().split() for x in redis_client.lrange(namespace + "test:deliveries", 0, -1)]
    routed: dict[str, set[str]] = {}
    for hostname, queue, task, exchange in ran:
        worker = hostname.split("@")[0]
        if exchange != "-":
            # an exchange's task ran on its worker, delivered from its own queue
            assert worker == exchange and queue.startswith(f"{exchange}."), (hostname, queue, task)
            routed.setdefault(exchange, set()).add(task)
        else:
            assert worker == "tiers" and queue in TIERS, (hostname, queue, task)
    assert set(routed) == set(SUPPORTED), routed
    for exchange, tasks in routed.items():
        assert "execution.execute" in tasks, (exchange, tasks)
