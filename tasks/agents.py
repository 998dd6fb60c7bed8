"""The five agents as Celery tasks: shells that decode ids, call one stage, return a little.

Queues come from the task names (see ``tasks/routing.py``): news and market on ``low``,
analysts and strategy on ``medium``, execution on ``high``. Every task is idempotent: it
rewrites its own stage output, and execution looks its order up before placing one.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from tasks import context, reports, stages


@shared_task(name="news.collect")
def collect_news(run_id: str, exchange: str, symbol: str, decided_at: str) -> int:
    """Collect the news usable at the decision time; return how many items were kept."""
    rt = context.current()
    return rt.run_async(stages.collect_news(rt, run_id, exchange, symbol, decided_at), 120)


@shared_task(name="market.snapshot")
def market_snapshot(run_id: str, exchange: str, symbol: str) -> float:
    """Fetch candles, ticker and book; return the last price."""
    rt = context.current()
    return rt.run_async(stages.market_snapshot(rt, run_id, exchange, symbol), 240)


@shared_task(name="analysis.case")
def analyse_case(_inputs: Any, run_id: str, exchange: str, symbol: str, side: str) -> float:
    """Argue the long or the short case; return its confidence."""
    rt = context.current()
    return rt.run_async(stages.analyst(rt, run_id, exchange, symbol, side), 120)


@shared_task(name="strategy.decide")
def decide(_cases: Any, run_id: str, exchange: str, symbol: str) -> str:
    """Weigh both cases into a plan; return buy, sell or hold."""
    rt = context.current()
    return rt.run_async(stages.strategy(rt, run_id, exchange, symbol), 120)


@shared_task(name="execution.execute", acks_late=True)
def execute(_action: Any, run_id: str, exchange: str, symbol: str) -> dict[str, Any]:
    """Risk-check the plan, place at most one order, write the report; return a summary."""
    rt = context.current()
    outcome = rt.run_async(stages.execute(rt, run_id, exchange, symbol), 240)
    path = reports.write(rt, reports.build(rt, run_id, exchange, symbol))
    return {
        "symbol": symbol,
        "action": outcome["action"],
        "report": str(path),
        "order": (outcome.get("order") or {}).get("status"),
    }
