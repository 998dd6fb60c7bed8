"""The five agents as Celery tasks: shells that decode ids, call one stage, return a little.

Queues come from the task names (see ``tasks/routing.py``): news and market on ``low``,
analysts and strategy on ``medium``, execution on ``high``. Every task is idempotent: it
rewrites its own stage output, and execution looks its order up before placing one. A task
that fails records its error as the run's (``tasks/failures.py``) before it fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import shared_task

from core.config import AGENT_STAGE_SECONDS
from core.tracing import continued, current_ids
from tasks import context, execution, failures, news, reports, stages


@contextmanager
def _stage(
    name: str, span: str, run_id: str, exchange: str, symbol: str, *, traceparent: str | None
) -> Iterator[context.Runtime]:
    """Run one stage of a symbol's run inside its span, recording the error it raises."""
    rt = context.current()
    with (
        continued(traceparent, span, run_id=run_id, exchange=exchange, symbol=symbol),
        failures.recorded(rt, run_id, exchange, symbol, name),
    ):
        yield rt


@shared_task(name="news.collect")
def collect_news(
    run_id: str, exchange: str, symbol: str, decided_at: str, traceparent: str | None = None
) -> int:
    """Collect the news usable at the decision time; return how many items were kept."""
    with _stage(
        "news.collect", "agent.news", run_id, exchange, symbol, traceparent=traceparent
    ) as rt:
        return rt.run_async(
            news.collect_news(rt, run_id, exchange, symbol, decided_at), AGENT_STAGE_SECONDS
        )


@shared_task(name="market.snapshot")
def market_snapshot(
    run_id: str, exchange: str, symbol: str, traceparent: str | None = None
) -> float:
    """Fetch candles, ticker and book of a listed symbol; return the last price."""
    with _stage(
        "market.snapshot", "agent.market", run_id, exchange, symbol, traceparent=traceparent
    ) as rt:
        return rt.run_async(stages.market_snapshot(rt, run_id, exchange, symbol), 240)


@shared_task(name="analysis.case")
def analyse_case(
    _inputs: Any, run_id: str, exchange: str, symbol: str, side: str, traceparent: str | None = None
) -> float:
    """Argue the long or the short case; return its confidence."""
    with _stage(
        "analysis.case", f"agent.{side}", run_id, exchange, symbol, traceparent=traceparent
    ) as rt:
        return rt.run_async(stages.analyst(rt, run_id, exchange, symbol, side), AGENT_STAGE_SECONDS)


@shared_task(name="strategy.decide")
def decide(
    _cases: Any, run_id: str, exchange: str, symbol: str, traceparent: str | None = None
) -> str:
    """Weigh both cases into a plan; return buy, sell or hold."""
    with _stage(
        "strategy.decide", "agent.strategy", run_id, exchange, symbol, traceparent=traceparent
    ) as rt:
        return rt.run_async(stages.strategy(rt, run_id, exchange, symbol), AGENT_STAGE_SECONDS)


@shared_task(name="execution.execute", acks_late=True)
def execute(
    _action: Any, run_id: str, exchange: str, symbol: str, traceparent: str | None = None
) -> dict[str, Any]:
    """Risk-check the plan, place at most one order, write the report; return a summary."""
    with _stage(
        "execution.execute", "agent.execution", run_id, exchange, symbol, traceparent=traceparent
    ) as rt:
        outcome = rt.run_async(execution.execute(rt, run_id, exchange, symbol), 240)
        report = reports.build(rt, run_id, exchange, symbol)
        report["trace_id"] = current_ids()[0] or None
        path = reports.write(rt, report)
    return {
        "exchange": exchange,
        "symbol": symbol,
        "action": outcome["action"],
        "report": str(path),
        "order": (outcome.get("order") or {}).get("status"),
        "rungs": report["rungs"],
    }
