"""The order gate on every path: paper means paper, the guard holds, one order per plan.

Real Redis, real ``celery worker`` processes, the sandbox over HTTP with unmodified ccxt.
``ORDER_TRIALS`` (default 2; ``make stress`` sets 20) sets how many times the concurrency
scenarios run.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from core.config import AppConfig
from core.errors import OrderRefusedError
from core.keys import KeySpace
from resilience import ResilientAPIClient
from resilience.ledger import Ledger
from tests.integration.sandbox_fixtures import admin, running_sandbox
from tests.integration.workers import WorkerFleet, worker_fleet

pytestmark = pytest.mark.integration

TRIALS = int(os.environ.get("ORDER_TRIALS", "2"))


def settings(url: str, namespace: str, **exchange: Any) -> dict[str, Any]:
    return {
        "redis": {"key_prefix": namespace},
        "exchanges": {"binance": {"base_url": url, **exchange}},
        "retry_strategies": {"default": {"max_attempts": 2, "base_delay": 0.05, "jitter": False}},
        "performance": {"connection_pooling": {"connection_timeout": 1, "read_timeout": 3}},
        "trading": {"risk": {"max_position_per_symbol": 100000}},
    }


@contextmanager
def fleet_on(
    redis_url: str, namespace: str, tmp: Path, config: dict[str, Any], concurrency: int = 1
) -> Iterator[WorkerFleet]:
    """Yield a fleet with one worker on every queue, running ``config``."""
    (tmp / "config.yaml").write_text(yaml.safe_dump(config))
    with worker_fleet(redis_url, namespace, tmp) as fleet:
        fleet.start("gate", concurrency=concurrency)
        yield fleet


def slow_post(url: str, seconds: float) -> None:
    """Make the sandbox's next order request take ``seconds`` before it is answered."""
    fault = {"kind": "hang", "seconds": seconds, "count": 1, "endpoint": "POST /api/v3/order"}
    admin(url, "faults", "PUT", [fault])


def orders_at(url: str) -> int:
    return int(admin(url, "stats")["requests_by_endpoint"].get("POST /api/v3/order", 0))


def direct(
    config: dict[str, Any],
    client: redis.Redis,
    endpoint: str,
    params: Any,
    errors: type[Exception] = OrderRefusedError,
) -> Any:
    """Call ``ResilientAPIClient.resilient_request`` in this process; return data or error."""
    api = ResilientAPIClient(client, AppConfig.model_validate(config))

    async def call() -> Any:
        try:
            return (await api.resilient_request("binance", endpoint, params)).data
        except errors as exc:
            return exc
        finally:
            await api.close()

    return asyncio.run(call())


def through_tasks(fleet: WorkerFleet, endpoint: str, params: dict[str, Any]) -> list[Any]:
    """Send one write by the seed API and by a PriorityQueueManager payload; return outcomes."""
    from main import MultiExchangeTradingSystem
    from workers.queues import Priority, PriorityQueueManager

    app = fleet.client_app()

    def outcome(task_id: str) -> Any:
        try:
            return app.AsyncResult(task_id).get(timeout=60)["data"]
        except OrderRefusedError as exc:
            return exc
        except Exception as exc:  # the worker's error, re-raised by Celery by its name
            return exc

    async def scenario() -> list[Any]:
        system = MultiExchangeTradingSystem(fleet.tmp / "config.yaml")
        system.app, system._started = app, True
        seed = await system.submit_trading_request("binance", endpoint, params, "high")
        manager = PriorityQueueManager()
        manager.app, manager._started = app, True
        payload = {"action": "exchange_request", "exchange": "binance", "endpoint": endpoint}
        queued = await manager.submit_task(Priority.HIGH, {**payload, "params": params})
        return [await asyncio.to_thread(outcome, seed), await asyncio.to_thread(outcome, queued)]

    return asyncio.run(scenario())


def market_buy(amount: float) -> dict[str, Any]:
    return {"symbol": "BTC/USDT", "type": "market", "side": "buy", "amount": amount}


def test_paper_mode_sends_no_order_on_any_path(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with running_sandbox(starting_balances={"USDT": 100000}) as sb:
        # a URL on this host that the config says is a real exchange: paper must simulate
        config = settings(sb.url, namespace, is_sandbox=False)
        paper = direct(config, redis_client, "create_order", market_buy(0.0005))
        raw = direct(
            config,
            redis_client,
            "POST /api/v3/order",
            {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.0005"},
        )
        cancel = direct(config, redis_client, "cancel_order", {"id": "1", "symbol": "BTC/USDT"})
        price = direct(config, redis_client, "fetch_ticker", {"symbol": "ETH/USDT"})["last"]
        seed_plan(redis_client, namespace, "paper-run", price)
        with fleet_on(redis_url, namespace, tmp_path, config) as fleet:
            seed, payload = through_tasks(fleet, "create_order", market_buy(0.0005))
            executed = execute(fleet.client_app(), "paper-run").get(timeout=60)
        sent = orders_at(sb.url)
    report = json.loads(Path(executed["report"]).read_text())["execution"]
    assert report["mode"] == "paper" and report["order"]["status"] == "simulated", report
    assert report["order"]["source"] == "paper"
    assert paper["status"] == "simulated" and paper["filled"] == 0.0005
    assert isinstance(raw, OrderRefusedError) and "raw REST order write" in str(raw)
    assert cancel["simulated"] is True
    assert seed["status"] == "simulated", seed
    assert payload["status"] == "simulated", payload
    assert sent == 0, "paper mode sent an order to an exchange that is not a sandbox"
    audit = redis_client.xrange(KeySpace(namespace).order_audit())
    modes = {fields[b"mode"] for _, fields in audit}
    assert modes == {b"paper"} and len(audit) == 6
    # every path's paper fill is in the paper wallet, once
    ledger = Ledger(redis_client, KeySpace(namespace))
    btc = ledger.position("binance", "BTC/USDT")
    assert btc is not None and btc.amount == pytest.approx(3 * 0.0005) and len(btc.fills) == 3
    eth = ledger.position("binance", "ETH/USDT")
    assert eth is not None and eth.run_id == "paper-run" and eth.amount == report["order"]["filled"]
    assert ledger.wallet("binance")["BTC"] == pytest.approx(0.0015)


def test_the_risk_guard_and_the_kill_switch_hold_on_every_path(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with running_sandbox(starting_balances={"USDT": 100000}) as sb:
        config = settings(sb.url, namespace)
        config["trading"] = {"risk": {"max_notional_per_order": 100}}
        price = direct(config, redis_client, "fetch_ticker", {"symbol": "BTC/USDT"})["last"]
        big = market_buy(round(3535 / price, 5))  # 3,535 USDT against a 100 USDT limit
        refused = [direct(config, redis_client, "create_order", big)]
        with fleet_on(redis_url, namespace, tmp_path, config) as fleet:
            refused += through_tasks(fleet, "create_order", big)
            redis_client.set(KeySpace(namespace).kill_switch(), "1")
            small = market_buy(round(20 / price, 5))
            killed = [direct(config, redis_client, "create_order", small)]
            killed += through_tasks(fleet, "create_order", small)
        sent = orders_at(sb.url)
    for error in refused:
        assert type(error).__name__ == "OrderRefusedError", error
        assert "notional limit" in str(error), error
    for error in killed:
        assert type(error).__name__ == "OrderRefusedError", error
        assert "kill switch is on" in str(error), error
    assert sent == 0


@pytest.mark.parametrize(
    ("order", "line"),
    [
        ({**market_buy(0.001), "side": "hold"}, "side must be buy or sell, got 'hold'"),
        ({**market_buy(0.001), "amount": "lots"}, "amount must be a number, got 'lots'"),
        ({**market_buy(0.001), "symbol": "FOO/BAR"}, "FOO/BAR"),
        ({"symbol": "BTC/USDT", "side": "buy", "amount": 0.001}, "create_order needs type"),
    ],
)
def test_a_bad_order_gets_one_clear_line_on_every_path(
    redis_url: str,
    namespace: str,
    redis_client: redis.Redis,
    tmp_path: Path,
    order: dict[str, Any],
    line: str,
) -> None:
    with running_sandbox() as sb:
        config = settings(sb.url, namespace)
        answers = [direct(config, redis_client, "create_order", order, errors=Exception)]
        with fleet_on(redis_url, namespace, tmp_path, config) as fleet:
            answers += through_tasks(fleet, "create_order", order)
        sent = orders_at(sb.url)
    for answer in answers:
        assert type(answer).__name__ == "InvalidRequestError", answer
        assert line in str(answer) and "\n" not in str(answer), answer
    assert sent == 0


def test_one_client_order_id_sent_by_two_paths_at_once_places_one_order(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with running_sandbox(starting_balances={"USDT": 100000}) as sb:
        config = settings(sb.url, namespace)
        price = eth_price(config, redis_client)
        order = {
            "symbol": "ETH/USDT",
            "type": "market",
            "side": "buy",
            "amount": round(20 / price, 4),
            "params": {"clientOrderId": "cai-operator-0001"},
        }
        slow_post(sb.url, 1)  # both inside the gate at the same time
        with fleet_on(redis_url, namespace, tmp_path, config, concurrency=2) as fleet:
            seed, payload = through_tasks(fleet, "create_order", order)
        stats = admin(sb.url, "stats")
    assert seed["clientOrderId"] == payload["clientOrderId"] == "cai-operator-0001"
    assert seed["id"] == payload["id"]
    assert stats["orders"] == {"sandbox-key": 1}


def seed_plan(
    client: redis.Redis,
    namespace: str,
    run_id: str,
    price: float,
    *,
    decided_at: datetime | None = None,
    valid_for: float = 300.0,
    symbol: str = "ETH/USDT",
) -> None:
    """Write the stage outputs an execution task reads: a buy plan and its inputs."""
    keys, taken = KeySpace(namespace), decided_at or datetime.now(UTC)
    case = {"thesis": "t", "evidence": [], "confidence": 0.5, "invalidation": None}
    outputs = {
        "snapshot": {"taken_at": taken.isoformat(), "last": price, "bid": price, "ask": price},
        "news": [],
        "long": {"side": "long", **case, "rung": "rules"},
        "short": {"side": "short", **case, "rung": "rules"},
        "plan": {
            "action": "buy",
            "symbol": symbol,
            "size": round(20 / price, 4),
            "entry": price,
            "stop_loss": price * 0.97,
            "take_profit": price * 1.05,
            "confidence": 0.6,
            "rationale": "test plan",
            "horizon": "4h",
            "rung": "rules",
            "decided_at": taken.isoformat(),
            "valid_until": (taken + timedelta(seconds=valid_for)).isoformat(),
        },
    }
    outputs["snapshot"]["candles"] = {}
    for stage, data in outputs.items():
        key = keys.stage(run_id, "binance", symbol, stage)
        client.set(key, json.dumps(data), ex=3600)


def execute(app: Any, run_id: str, symbol: str = "ETH/USDT", queue: str = "high") -> Any:
    return app.send_task("execution.execute", args=[None, run_id, "binance", symbol], queue=queue)


def eth_price(config: dict[str, Any], client: redis.Redis) -> float:
    return float(direct(config, client, "fetch_ticker", {"symbol": "ETH/USDT"})["last"])


@pytest.mark.timeout(60 + 20 * TRIALS)
def test_two_concurrent_deliveries_of_one_execution_place_one_order(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with running_sandbox(starting_balances={"USDT": 100000}) as sb:
        config = settings(sb.url, namespace)
        with fleet_on(redis_url, namespace, tmp_path, config, concurrency=2) as fleet:
            app = fleet.client_app()
            outcomes = []
            for _ in range(TRIALS):
                # the POST is slow, so both deliveries are inside the gate at the same time
                slow_post(sb.url, 1)
                run_id = f"gate-{uuid.uuid4().hex[:8]}"
                seed_plan(redis_client, namespace, run_id, eth_price(config, redis_client))
                both = [execute(app, run_id), execute(app, run_id)]
                outcomes.append(sorted(str(r.get(timeout=60)["order"]) for r in both))
            sent = orders_at(sb.url)
            stats = admin(sb.url, "stats")
    # each plan's one entry, and the two legs of the OCO that protects it
    assert stats["orders"] == {"sandbox-key": 3 * TRIALS}, "one entry per plan"
    assert sent == TRIALS
    assert all(pair == ["closed", "closed"] for pair in outcomes), outcomes


@pytest.mark.timeout(60 + 40 * TRIALS)
def test_a_delivery_during_a_dead_workers_post_waits_and_finds_its_order(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with running_sandbox(starting_balances={"USDT": 100000}) as sb:
        config = settings(sb.url, namespace)
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
        with worker_fleet(redis_url, namespace, tmp_path) as fleet:
            app = fleet.client_app()
            # already running, so the second delivery arrives while the first POST hangs
            fleet.start("rescuer", queues="high")
            sources = []
            for trial in range(TRIALS):
                # 3 s: under the request timeout (4 s), so the first POST is still in
                # flight at the exchange when the second delivery asks for the order
                slow_post(sb.url, 3)
                victim = fleet.start(f"victim{trial}", queues="doomed")
                run_id = f"kill-{uuid.uuid4().hex[:8]}"
                seed_plan(redis_client, namespace, run_id, eth_price(config, redis_client))
                before = orders_at(sb.url)
                execute(app, run_id, queue="doomed")
                deadline = time.monotonic() + 60
                while orders_at(sb.url) == before:
                    assert time.monotonic() < deadline, "no order was attempted"
                    time.sleep(0.02)
                victim.kill()  # mid-POST: the order's outcome is unknown to the fleet
                # the same task again at once, as an early redelivery would bring it
                again = execute(app, run_id).get(timeout=90)
                report = json.loads(Path(again["report"]).read_text())
                sources.append(report["execution"]["order"]["source"])
            entries = orders_at(sb.url)
    # one entry per plan: the redelivery found the dead worker's order instead of sending one
    # (the sandbox's order count also holds the legs of OCO lists protecting the position)
    assert entries == TRIALS, "one order per plan"
    assert sources == ["found"] * TRIALS, sources


def test_a_plan_older_than_the_last_order_or_its_deadline_sends_nothing(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with running_sandbox(starting_balances={"USDT": 100000}) as sb:
        config = settings(sb.url, namespace)
        price = eth_price(config, redis_client)
        with fleet_on(redis_url, namespace, tmp_path, config) as fleet:
            app = fleet.client_app()
            decided = datetime.now(UTC)
            # two runs decided on the same data, before either executed
            seed_plan(redis_client, namespace, "run-a", price, decided_at=decided)
            seed_plan(redis_client, namespace, "run-b", price, decided_at=decided)
            seed_plan(
                redis_client,
                namespace,
                "run-stale",
                price,
                decided_at=decided - timedelta(seconds=600),
                valid_for=150,
            )
            results = {run: execute(app, run).get(timeout=60) for run in ("run-a", "run-b")}
            stale = execute(app, "run-stale").get(timeout=60)
        stats = admin(sb.url, "stats")
    reports = {r: json.loads(Path(v["report"]).read_text()) for r, v in results.items()}
    assert results["run-a"]["order"] == "closed"
    assert results["run-b"]["order"] is None
    reasons = reports["run-b"]["execution"]["risk"]["reasons"]
    assert "after this plan's data" in reasons[0], reasons
    stale_reasons = json.loads(Path(stale["report"]).read_text())["execution"]["risk"]["reasons"]
    assert stale["order"] is None and "plan expired" in stale_reasons[0], stale_reasons
    # run-a's entry and the two legs of its protective OCO; nothing of run-b or run-stale
    assert stats["orders"] == {"sandbox-key": 3}


def test_a_sandbox_url_already_served_gets_no_second_server(tmp_path: Path) -> None:
    import http.server
    import threading

    from core.errors import ConfigError
    from workers.fleet import Fleet

    def fleet_for(url: str) -> Fleet:
        config = AppConfig.model_validate({"exchanges": {"binance": {"base_url": url}}})
        return Fleet(config, None, state_dir=tmp_path, echo=lambda *_: None)

    with running_sandbox() as sb:
        assert fleet_for(sb.url)._sandbox_already_served("binance") is True
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{other.server_address[1]}"
        with pytest.raises(ConfigError, match="not the sandbox"):
            fleet_for(url)._sandbox_already_served("binance")
    finally:
        other.shutdown()
        other.server_close()
    assert fleet_for(url)._sandbox_already_served("binance") is False  # free again: start ours
