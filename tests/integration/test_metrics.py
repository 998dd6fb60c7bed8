"""Metrics under several processes: one scrape shows them all (multiprocess mode)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from tests.integration.metrics_worker import report

pytestmark = pytest.mark.integration


def test_metrics_of_two_processes_appear_together_on_one_scrape(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=report, args=(str(tmp_path), "binance", n)) for n in (3, 4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))
    text = generate_latest(registry).decode()
    assert (
        'crypto_ai_exchange_requests_total{endpoint="fetch_ticker",exchange="binance",'
        'outcome="ok"} 7.0'
    ) in text
    assert (
        'crypto_ai_exchange_request_seconds_count{endpoint="fetch_ticker",exchange="binance"} 7.0'
        in text
    )
    assert (
        'crypto_ai_breaker_transitions_total{breaker="binance:public",'
        'transition="closed->open"} 2.0'
    ) in text
