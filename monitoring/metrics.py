"""Prometheus metrics of the fleet, correct under Celery's prefork pool.

Every process writes its samples to files in ``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's
multiprocess mode); one scrape endpoint (``serve``) merges them, so the metrics of every
worker process appear together. ``crypto-ai up`` sets the directory for all its processes,
empties it at start and serves ``/metrics`` on ``monitoring.prometheus_port``.

Warning: the directory must be set before prometheus_client is first imported in a process;
without it, metrics are per process (fine for one process, wrong for a fleet).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client import multiprocess as _multiprocess
from prometheus_client.exposition import generate_latest

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

EXCHANGE_REQUESTS = Counter(
    "crypto_ai_exchange_requests_total",
    "Exchange calls by outcome",
    ["exchange", "endpoint", "outcome"],
)
EXCHANGE_LATENCY = Histogram(
    "crypto_ai_exchange_request_seconds",
    "Exchange call latency",
    ["exchange", "endpoint"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
LIMITER = Counter(
    "crypto_ai_limiter_decisions_total",
    "Limiter admissions by outcome (admitted, waited, denied)",
    ["exchange", "outcome"],
)
LIMITER_WAIT = Histogram(
    "crypto_ai_limiter_wait_seconds",
    "Time requests waited for the shared budget",
    ["exchange"],
    buckets=(0.001, 0.01, 0.1, 0.5, 1, 5, 15, 30, 60),
)
THROTTLES = Counter(
    "crypto_ai_exchange_throttles_total", "429/418 answers received", ["exchange", "status"]
)
BREAKER_TRANSITIONS = Counter(
    "crypto_ai_breaker_transitions_total",
    "Circuit breaker state changes",
    ["breaker", "transition"],
)
FALLBACKS = Counter(
    "crypto_ai_fallback_answers_total",
    "Answers by the fallback level that served them",
    ["exchange", "level", "source"],
)
BATCHES = Counter(
    "crypto_ai_batches_total", "Batches sent (each one or more calls)", ["exchange", "endpoint"]
)
BATCHED = Counter(
    "crypto_ai_batched_requests_total",
    "Requests answered by a batch",
    ["exchange", "endpoint"],
)
RETRIES = Counter("crypto_ai_retries_total", "Retried exchange calls", ["exchange", "endpoint"])
LOG_RECORDS_DROPPED = Counter(
    "crypto_ai_log_records_dropped_total",
    "Log records the Redis log copy dropped while Redis was away (oldest first)",
)
ORDERS = Counter("crypto_ai_orders_total", "Orders by outcome", ["exchange", "outcome"])
RISK_REJECTIONS = Counter(
    "crypto_ai_risk_rejections_total", "Plans the risk guard refused", ["reason"]
)
LLM_CALLS = Counter("crypto_ai_llm_calls_total", "LLM calls by outcome", ["model", "outcome"])
LLM_TOKENS = Counter(
    "crypto_ai_llm_tokens_total",
    "LLM tokens the server reported using, by kind (prompt, completion)",
    ["model", "kind"],
)
LLM_SECONDS = Histogram(
    "crypto_ai_llm_call_seconds",
    "LLM call latency, answered or failed",
    ["model", "outcome"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
LLM_COST = Counter(
    "crypto_ai_llm_cost_total", "LLM cost at the configured llm.price_per_1k_tokens", ["model"]
)
BREAKER_STATE = Gauge(
    "crypto_ai_breaker_state",
    "Breaker state: 0 closed, 1 half-open, 2 open",
    ["breaker"],
    multiprocess_mode="max",
)
BUDGET_LEFT = Gauge(
    "crypto_ai_budget_remaining",
    "What is left of an exchange pool now",
    ["exchange", "pool"],
    multiprocess_mode="min",
)
TASK_SECONDS = Histogram(
    "crypto_ai_task_seconds",
    "Task run time by queue",
    ["queue", "task"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
QUEUE_DEPTH = Gauge(
    "crypto_ai_queue_depth", "Messages waiting per queue", ["queue"], multiprocess_mode="max"
)

# set by the order gate after each fill it applies (resilience/orders.py, event "position");
# the latest write of any process is the ledger's state
POSITION_AMOUNT = Gauge(
    "crypto_ai_position_amount",
    "Open position per symbol in the ledger (base units; 0 when flat)",
    ["exchange", "symbol"],
    multiprocess_mode="mostrecent",
)
UNREALIZED_PNL = Gauge(
    "crypto_ai_unrealized_pnl",
    "Unrealised P&L of the open positions at the last fill's price (quote currency)",
    ["exchange"],
    multiprocess_mode="mostrecent",
)
REALIZED_PNL_TODAY = Gauge(
    "crypto_ai_realized_pnl_today",
    "P&L realised today (UTC) in the ledger (quote currency)",
    ["exchange"],
    multiprocess_mode="mostrecent",
)


def prepare_directory(directory: Path) -> None:
    """Empty (or create) the multiprocess directory before the fleet starts."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)


def registry() -> CollectorRegistry:
    """Return a registry that merges every process's samples (or this process's alone)."""
    if os.environ.get(MULTIPROC_ENV):
        merged = CollectorRegistry()
        _multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return merged
    from prometheus_client import REGISTRY

    return REGISTRY


def scrape() -> bytes:
    """Return the merged metrics in Prometheus' text format."""
    return bytes(generate_latest(registry()))


def serve(port: int, address: str = "0.0.0.0") -> Any:  # noqa: S104 - scraped by Prometheus
    """Serve the merged metrics on ``http://address:port/metrics`` (a daemon thread)."""
    return start_http_server(port, addr=address, registry=registry())


def process_exited(pid: int) -> None:
    """Drop a dead process's live gauges (its counters stay, as they should)."""
    if os.environ.get(MULTIPROC_ENV):
        _multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def _outcome(fields: Any) -> str:
    return str(fields.get("outcome", "ok"))


def on_event(event: str, fields: Any) -> None:  # noqa: C901 - one table of events
    """Turn one ``core.events`` event into metric updates."""
    if event == "exchange.request":
        EXCHANGE_REQUESTS.labels(fields["exchange"], fields["endpoint"], _outcome(fields)).inc()
        EXCHANGE_LATENCY.labels(fields["exchange"], fields["endpoint"]).observe(fields["seconds"])
    elif event == "limiter.admitted":
        waited = float(fields.get("waited", 0.0))
        LIMITER.labels(fields["exchange"], "waited" if waited > 0.001 else "admitted").inc()
        LIMITER_WAIT.labels(fields["exchange"]).observe(waited)
    elif event == "limiter.denied":
        LIMITER.labels(fields["exchange"], "denied").inc()
    elif event == "exchange.throttled":
        THROTTLES.labels(fields["exchange"], str(fields["status"])).inc()
    elif event == "breaker.transition":
        BREAKER_TRANSITIONS.labels(fields["breaker"], fields["transition"]).inc()
    elif event == "fallback.answer":
        FALLBACKS.labels(fields["exchange"], fields["level"], fields["source"]).inc()
    elif event == "batch.flushed":
        BATCHES.labels(fields["exchange"], fields["endpoint"]).inc()
        BATCHED.labels(fields["exchange"], fields["endpoint"]).inc(float(fields["items"]))
    elif event == "exchange.retry":
        RETRIES.labels(fields["exchange"], fields["endpoint"]).inc()
    elif event == "order":
        ORDERS.labels(fields["exchange"], _outcome(fields)).inc()
    elif event == "risk.rejected":
        RISK_REJECTIONS.labels(str(fields["reason"])).inc()
    elif event == "llm.usage":
        _llm_usage(fields)
    elif event == "position":
        POSITION_AMOUNT.labels(fields["exchange"], fields["symbol"]).set(float(fields["amount"]))
        UNREALIZED_PNL.labels(fields["exchange"]).set(float(fields["unrealized"]))
        REALIZED_PNL_TODAY.labels(fields["exchange"]).set(float(fields["realized_today"]))


def _llm_usage(fields: Any) -> None:
    """Count one LLM call (``llm/usage.py``'s ``record_call``) with its reported usage."""
    model, outcome = str(fields["model"]), _outcome(fields)
    LLM_CALLS.labels(model, outcome).inc()
    LLM_SECONDS.labels(model, outcome).observe(float(fields["seconds"]))
    for kind in ("prompt", "completion"):
        tokens = fields.get(f"{kind}_tokens")
        if tokens:  # None: the server reported no usage, so nothing is known to count
            LLM_TOKENS.labels(model, kind).inc(float(tokens))
    if fields.get("cost"):
        LLM_COST.labels(model).inc(float(fields["cost"]))


def install() -> None:
    """Make this process's events update the metrics."""
    from core import events

    events.subscribe(on_event)
