"""A task that timed out never places its order afterwards, nor does a later delivery of it.

An order that waits in the gate (another process holds the symbol's lease) past its task's
time limit must be cancelled with the task: when the lease is released later, nothing is
sent, and the same message delivered again (the broker restores an unacknowledged message
when a worker's connection drops) is refused instead of sending it. Real Redis, the sandbox over HTTP; the first test runs a real ``celery worker``.
"""

from __future__ import annotations

import concurrent.futures
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
    slow_post,
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
            # the broker delivers the message again (a connection loss restored it), with
            # time enough to wait for the lease this time (the first outcome is forgotten,
            # so that the same task id waits for the second)
            result.forget()
            again = fleet.client_app().send_task(
                "execution.execute",
                args=[None, run_id, "binance", SYMBOL],
                queue="high",
                task_id=result.id,
                soft_time_limit=60,
                time_limit=70,
            )
            redelivered = again.get(timeout=30)
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
    assert redelivered["order"] is None, redelivered
    stored = redis_client.get(keys.stage(run_id, "binance", SYMBOL, "execution"))
    refused = json.loads(cast(bytes, stored))["risk"]
    assert refused["approved"] is False, refused
    assert "cancelled before it was sent" in "; ".join(refused["reasons"]), refused


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


def _submit_in_thread(api: ResilientAPIClient, request: OrderRequest) -> Any:
    """Start a later delivery of ``request`` on its own thread; return its future."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    later = pool.submit(run_async, api.orders.submit(request), 60)
    pool.shutdown(wait=False)
    return later


def _claim_record(client: redis.Redis, namespace: str, cid: str) -> dict[str, Any]:
    raw = cast(bytes | None, client.get(KeySpace(namespace).order_claim("binance", cid)))
    return cast(dict[str, Any], json.loads(raw)) if raw else {}


def test_an_order_cancelled_before_it_was_sent_is_refused_to_every_later_delivery(
    namespace: str, redis_client: redis.Redis
) -> None:
    """A redelivery of a timed-out order (the broker restored its message) sends nothing.

    The first submission waits for the symbol's lease past its time limit and is cancelled;
    the same order delivered again (same client order id) must not wait for the claim to
    lapse and then send it: a cancelled order is never sent later.
    """
    cid = f"cai-timeout-{uuid.uuid4().hex[:8]}"
    order: dict[str, Any] = {
        "symbol": SYMBOL,
        "type": "market",
        "side": "buy",
        "params": {"clientOrderId": cid},
    }
    with running_sandbox(starting_balances={"USDT": 100000}) as sb:
        config = settings(sb.url, namespace)
        order["amount"] = round(20 / eth_price(config, redis_client), 4)
        api = ResilientAPIClient(redis_client, AppConfig.model_validate(config))
        request = OrderRequest.parse("binance", "create_order", order)
        try:
            with symbol_lease_held(redis_client, namespace) as release:
                with pytest.raises(TimeoutError):
                    run_async(api.orders.submit(request), timeout=1)
                first = _claim_record(redis_client, namespace, cid)
                later = _submit_in_thread(api, request)
                # the old gate let the claim lapse, took it again and waited for the lease
                wait_for(
                    lambda: (
                        later.done()
                        or _claim_record(redis_client, namespace, cid).get("holder")
                        not in (None, first.get("holder"))
                    ),
                    "the later delivery to settle or to take the claim",
                )
                assert release(), "the lease lapsed before the later delivery was answered"
                answer = later.result(timeout=30)
                time.sleep(AFTERWARDS)
            sent = orders_at(sb.url)
        finally:
            run_async(api.close(), timeout=10)
    assert sent == 0, "a later delivery placed the order of a cancelled submission"
    assert not answer.approved, answer
    assert "cancelled before it was sent" in "; ".join(answer.reasons), answer.reasons


def test_an_order_cancelled_in_flight_is_looked_up_by_a_later_delivery_never_resent(
    namespace: str, redis_client: redis.Redis
) -> None:
    """Cancelled while its request was at the exchange: the next delivery finds it, once."""
    cid = f"cai-inflight-{uuid.uuid4().hex[:8]}"
    order: dict[str, Any] = {
        "symbol": SYMBOL,
        "type": "market",
        "side": "buy",
        "params": {"clientOrderId": cid},
    }
    with running_sandbox(starting_balances={"USDT": 100000}) as sb:
        config = settings(sb.url, namespace)
        order["amount"] = round(20 / eth_price(config, redis_client), 4)
        api = ResilientAPIClient(redis_client, AppConfig.model_validate(config))
        request = OrderRequest.parse("binance", "create_order", order)
        try:
            slow_post(sb.url, 2)  # the order arrives, and is answered 2 s later
            with pytest.raises(TimeoutError):
                run_async(api.orders.submit(request), timeout=1)
            assert _claim_record(redis_client, namespace, cid).get("state") == "abandoned"
            answer = run_async(api.orders.submit(request), timeout=60)
            time.sleep(AFTERWARDS)
            sent = orders_at(sb.url)
            stats = admin(sb.url, "stats")
        finally:
            run_async(api.close(), timeout=10)
    assert sent == 1, f"{sent} order requests for one order"
    assert answer.approved and answer.source == "found", answer
    assert (answer.order or {}).get("clientOrderId") == cid, answer.order
    assert sum(stats["orders"].values()) == 1, stats["orders"]


@pytest.mark.timeout(90)
def test_a_timed_out_bare_order_payload_delivered_again_never_places_its_order(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """The same through a PriorityQueueManager payload with no client order id of its own.

    The order is named by its delivery (resilience/delivery.py), so the second delivery of the
    message finds the first one's abandoned claim instead of a fresh random id.
    """
    with running_sandbox(starting_balances={"USDT": 100000}) as sb:
        config = settings(sb.url, namespace)
        config["celery"] = {"task_soft_time_limit": 1, "task_time_limit": 30}
        amount = round(20 / eth_price(config, redis_client), 4)
        order = {"symbol": SYMBOL, "type": "market", "side": "buy", "amount": amount}
        body = {"action": "exchange_request", "exchange": "binance", "endpoint": "create_order"}
        args = [{**body, "params": order}]
        task_id = f"payload-{uuid.uuid4().hex[:8]}"
        with (
            symbol_lease_held(redis_client, namespace) as release,
            fleet_on(redis_url, namespace, tmp_path, config) as fleet,
        ):
            app = fleet.client_app()
            first = app.send_task("fleet.payload", args=args, queue="high", task_id=task_id)
            with pytest.raises(Exception) as timed_out:
                first.get(timeout=30)
            first.forget()
            again = app.send_task(
                "fleet.payload",
                args=args,
                queue="high",
                task_id=task_id,
                soft_time_limit=60,
                time_limit=70,
            )
            with pytest.raises(Exception) as refused:
                again.get(timeout=30)
            assert release(), "the lease lapsed before the second delivery was answered"
            time.sleep(AFTERWARDS)
            sent = orders_at(sb.url)
    assert type(timed_out.value).__name__ == "SoftTimeLimitExceeded", timed_out.value
    assert "cancelled before it was sent" in str(refused.value), refused.value
    assert sent == 0, "a second delivery placed the order of a timed-out payload"
