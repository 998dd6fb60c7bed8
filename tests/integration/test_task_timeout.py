"""A task that timed out never places its order afterwards.

An order that waits in the gate (another process holds the symbol's lease) past its task's
time limit must be cancelled with the task: when the lease is released later, nothing is
sent. Real Redis, the sandbox over HTTP; the first test runs a real ``celery worker``.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from agents.orders import client_order_id
from core.config import AppConfig
from core.keys import KeySpace
from resilience import ResilientAPIClient
from resilience.orders import OrderRequest
from tests.integration.sandbox_fixtures import admin, running_sandbox
from tests.integration.test_order_gate import (
    eth_price,
    execute,
    fleet_on,
    orders_at,
    seed_plan,
    settings,
)
from workers.runtime import run_async

pytestmark = pytest.mark.integration

SYMBOL = "ETH/USDT"
#: After the lease is released: time enough for a coroutine left running to send its order.
AFTERWARDS = 3.0


@contextmanager
def symbol_lease_held(client: redis.Redis, namespace: str) -> Iterator[Callable[[], bool]]:
    """Hold the gate's lease of ``SYMBOL`` as another process's order in flight would.

    Written the way ``resilience/leases.py`` writes a lease (``SET NX PX`` of a JSON record
    naming its holder) on the key the gate waits for. Yields ``release``, which says whether
    the lease was still ours; far longer than the task's time limit, only it frees the lease.
    """
    key = KeySpace(namespace).order_symbol("binance", SYMBOL)
    record = {"holder": uuid.uuid4().hex, "at": time.time(), "client_order_id": "another-process"}
    value = json.dumps(record).encode()
    assert client.set(key, value, nx=True, px=60_000)

    def release() -> bool:
        held = client.get(key) == value  # only this test writes this value
        if held:
            client.delete(key)
        return held

    try:
        yield release
    finally:
        release()


def wait_for(condition: Callable[[], object], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.mark.timeout(90)
def test_an_execution_task_past_its_soft_time_limit_never_places_its_order(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    keys = KeySpace(namespace)
    with running_sandbox(starting_balances={"USDT": 100000}) as sb:
        config = settings(sb.url, namespace)
        # Celery's soft limit interrupts the task's wait in run_async (the task's own
        # run_async timeout is 240 s); the hard limit leaves room for the cancellation
        config["celery"] = {"task_soft_time_limit": 1, "task_time_limit": 30}
        run_id = f"timeout-{uuid.uuid4().hex[:8]}"
        seed_plan(redis_client, namespace, run_id, eth_price(config, redis_client))
        claim = keys.order_claim("binance", client_order_id(run_id, "binance", SYMBOL, "buy"))
        with (
            symbol_lease_held(redis_client, namespace) as release,
            fleet_on(redis_url, namespace, tmp_path, config) as fleet,
        ):
            result = execute(fleet.client_app(), run_id)
            # the task claimed its client order id and now waits in the gate for the lease
            wait_for(lambda: redis_client.exists(claim), "the task to enter the order gate")
            try:
                result.get(timeout=30)
                failure: BaseException | None = None
            except Exception as exc:  # the worker's error, re-raised by Celery by its name
                failure = exc
            assert release(), "the lease lapsed before the task timed out"
            time.sleep(AFTERWARDS)  # a coroutine left running takes the lease and sends now
            sent = orders_at(sb.url)
            stats = admin(sb.url, "stats")
    assert type(failure).__name__ == "SoftTimeLimitExceeded", failure
    raw = cast(bytes | None, redis_client.get(keys.stage(run_id, "binance", SYMBOL, "error")))
    error = json.loads(raw or "{}")
    assert error.get("stage") == "execution.execute", error
    assert error.get("error") == "SoftTimeLimitExceeded", error
    assert sent == 0, "the task timed out, then its order was placed anyway"
    assert stats["orders"] == {}, stats["orders"]


def test_an_order_waiting_past_its_run_async_timeout_is_never_sent(
    namespace: str, redis_client: redis.Redis
) -> None:
    order: dict[str, Any] = {
        "symbol": SYMBOL,
        "type": "market",
        "side": "buy",
        "params": {"clientOrderId": f"cai-timeout-{uuid.uuid4().hex[:8]}"},
    }
    with running_sandbox(starting_balances={"USDT": 100000}) as sb:
        config = settings(sb.url, namespace)
        order["amount"] = round(20 / eth_price(config, redis_client), 4)
        api = ResilientAPIClient(redis_client, AppConfig.model_validate(config))
        request = OrderRequest.parse("binance", "create_order", order)
        try:
            with symbol_lease_held(redis_client, namespace) as release:
                with pytest.raises(TimeoutError) as raised:
                    run_async(api.orders.submit(request), timeout=1)
                assert release(), "the lease lapsed before the submission timed out"
                time.sleep(AFTERWARDS)  # a coroutine left running takes the lease and sends now
            sent = orders_at(sb.url)
        finally:
            run_async(api.close(), timeout=10)
    assert sent == 0, "the submission timed out, then its order was placed anyway"
    assert re.search(r"submit cancelled after 1s\b", str(raised.value)), raised.value
