"""The I/O around the agents, one function per stage of an analysis run.

Each stage reads its inputs from Redis (under the run's keys), calls the pure agent, and
writes its output back; Celery tasks only decode arguments and call these. Big data never
travels in task arguments. A stage's LLM calls count to the stage in the run's LLM usage
(``llm.usage.stage_scope``), which the report shows.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from agents import features as feature_lib
from agents import news as news_lib
from agents.analysts import analyse
from agents.llm import (
    LLM_CACHE_SECONDS,
    NO_ATR,
    NO_LLM,
    CaseAnswer,
    answer_of,
    ask_case,
    ask_plan,
    case_from_answer,
    climb,
)
from agents.strategy import aim, decide
from agents.types import (
    AnalystReport,
    Candle,
    Holding,
    MarketSnapshot,
    NewsItem,
    Rung,
    TradePlan,
)
from core.tracing import set_attributes
from exchanges import candles as candles_lib
from llm.usage import stage_scope
from resilience import FallbackConfig
from resilience.cache import request_digest
from resilience.ledger import Ledger
from resilience.position import as_holding
from tasks.context import Runtime

log = logging.getLogger(__name__)

STAGE_TTL = 7 * 86400
PRIMARY_TIMEFRAME = "1h"


def save(rt: Runtime, run_id: str, exchange: str, symbol: str, stage: str, *, data: Any) -> None:
    """Store a stage's output (JSON) under the run's key."""
    key = rt.keyspace().stage(run_id, exchange, symbol, stage)
    rt.redis_client().set(key, json.dumps(data, default=str), ex=STAGE_TTL)


def load(rt: Runtime, run_id: str, exchange: str, symbol: str, stage: str) -> Any:
    """Return a stage's stored output; raise if the stage has not run."""
    raw = rt.redis_client().get(rt.keyspace().stage(run_id, exchange, symbol, stage))
    if raw is None:
        raise LookupError(f"run {run_id}: no {stage} output for {exchange} {symbol}")
    return json.loads(raw)  # type: ignore[arg-type]


async def market_snapshot(rt: Runtime, run_id: str, exchange: str, symbol: str) -> float:
    """Fetch candles on every configured timeframe, the ticker and the book; return the price.

    The reads go out together. The ticker comes from one batched read of the exchange's
    whole watchlist, shared by every snapshot for ``watchlist_max_age`` seconds
    (``performance.batch_processing``); a symbol outside the watchlist joins the fleet's
    batch of ticker requests, whose window passes while the candles and book are fetched.
    """
    client = rt.exchange_client()
    # market data may wait for the next window of a minute-long budget, never fail for it
    partial = FallbackConfig(level="partial", timeout=150)
    timeframes = list(rt.config().timeframes)
    # a timeframe the exchange does not serve is built from one it does (Coinbase: no 4h)
    plans = [candles_lib.plan(client.timeframes(exchange), tf) for tf in timeframes]
    reads = [
        client.resilient_request(
            exchange,
            "fetch_ohlcv",
            {"symbol": symbol, "timeframe": fetched, "limit": 100 * factor},
            partial,
        )
        for fetched, factor in plans
    ]
    batching = rt.config().performance.batch_processing
    watchlist = rt.config().watched(exchange)
    if batching.watchlist_max_age > 0 and len(watchlist) > 1:
        # one batched read of the whole watchlist serves every snapshot for a while
        shared = FallbackConfig(level="partial", timeout=150, fresh_ttl=batching.watchlist_max_age)
        reads.append(client.resilient_within(exchange, "fetch_ticker", symbol, watchlist, shared))
    else:
        reads.append(
            client.resilient_request(exchange, "fetch_ticker", {"symbol": symbol}, partial)
        )
    reads.append(
        client.resilient_request(
            exchange, "fetch_order_book", {"symbol": symbol, "limit": 20}, partial
        )
    )
    *series, ticker_answer, book_answer = await asyncio.gather(*reads)
    candles = {
        timeframe: [
            Candle(time=int(r[0]), open=r[1], high=r[2], low=r[3], close=r[4], volume=r[5])
            for r in candles_lib.resample(answer.data, timeframe, factor)
        ]
        for timeframe, (_, factor), answer in zip(timeframes, plans, series, strict=True)
    }
    ticker, book = ticker_answer.data, book_answer.data
    snapshot = MarketSnapshot(
        exchange=exchange,
        symbol=symbol,
        taken_at=datetime.now(UTC),
        candles=candles,
        last=ticker["last"],
        bid=ticker.get("bid") or ticker["last"],
        ask=ticker.get("ask") or ticker["last"],
        bids=[(p, q) for p, q, *_ in book["bids"]],
        asks=[(p, q) for p, q, *_ in book["asks"]],
    )
    save(rt, run_id, exchange, symbol, "snapshot", data=snapshot.model_dump(mode="json"))
    return snapshot.last


async def analyst(rt: Runtime, run_id: str, exchange: str, symbol: str, side: str) -> float:
    """Write the long or short case (LLM -> cache -> rules); return its confidence."""
    snapshot = MarketSnapshot.model_validate(load(rt, run_id, exchange, symbol, "snapshot"))
    items = [NewsItem.model_validate(i) for i in load(rt, run_id, exchange, symbol, "news")]
    score, count = news_lib.symbol_sentiment(items, symbol)
    feats = feature_lib.compute(snapshot, PRIMARY_TIMEFRAME)
    case_side: Literal["long", "short"] = "long" if side == "long" else "short"

    def rules() -> AnalystReport:
        return analyse(case_side, feats, score, count)

    model = rt.llm()
    if model is None:
        report = rules().model_copy(update={"fallback_reason": NO_LLM})
    else:
        cache = rt.exchange_client().cache
        digest = request_digest(exchange, f"llm:case:{side}", {"symbol": symbol})

        async def ask() -> AnalystReport:
            return await ask_case(
                model, case_side, symbol, features=feats, news=items, last=snapshot.last
            )

        hit = await cache.get(digest)  # read before the ladder: its rungs are plain calls
        learned: list[dict[str, Any]] = []

        def cached() -> AnalystReport | None:
            if hit is None or hit.age() > LLM_CACHE_SECONDS:
                return None
            return case_from_answer(case_side, CaseAnswer.model_validate(hit.value), Rung.CACHE)

        def remember(report: AnalystReport) -> None:
            learned.append(answer_of(report).model_dump(mode="json"))

        with stage_scope(run_id, exchange, symbol, side):
            report, _, reason = await climb(
                ask, cached, rules, remember, what=f"{exchange} {symbol} {side} case"
            )
        for answer in learned:
            await cache.put(digest, answer, LLM_CACHE_SECONDS)
        report = report.model_copy(update={"fallback_reason": reason})
    set_attributes(
        rung=report.rung.value, confidence=report.confidence, fallback=report.fallback_reason
    )
    save(rt, run_id, exchange, symbol, side, data=report.model_dump(mode="json"))
    return report.confidence


def holding(rt: Runtime, exchange: str, symbol: str) -> Holding | None:
    """Return the ledger's open position of ``symbol`` as the strategy sees it (None: flat)."""
    # one small read, like the stage's own loads (the fills that build it pass the gate)
    held = Ledger(rt.redis_client(), rt.keyspace()).position(exchange, symbol)
    return as_holding(held, (held.protection or {}).get("kind") if held else None)


async def strategy(rt: Runtime, run_id: str, exchange: str, symbol: str) -> str:
    """Weigh both cases and the position held into a plan (LLM -> rules); return its action.

    The plan targets the position (``agents.strategy.aim``: open, add, hold, reduce, close),
    so a symbol is not entered twice in the same direction while its plan is live.
    """
    snapshot = MarketSnapshot.model_validate(load(rt, run_id, exchange, symbol, "snapshot"))
    long = AnalystReport.model_validate(load(rt, run_id, exchange, symbol, "long"))
    short = AnalystReport.model_validate(load(rt, run_id, exchange, symbol, "short"))
    feats = feature_lib.compute(snapshot, PRIMARY_TIMEFRAME)
    limits = rt.config().trading.risk
    held = holding(rt, exchange, symbol)
    now = snapshot.taken_at

    def rules() -> TradePlan:
        return decide(symbol, long, short, feats, limits)

    model, reason = rt.llm(), None
    if model is None:
        plan, reason = rules(), NO_LLM
    elif feats.atr is None:
        plan, reason = rules(), NO_ATR
    else:

        async def ask() -> TradePlan:
            return await ask_plan(
                model,
                symbol,
                features=feats,
                long=long,
                short=short,
                limits=limits,
                holding=held,
                now=now,
            )

        with stage_scope(run_id, exchange, symbol, "strategy"):
            plan, _, reason = await climb(
                ask, lambda: None, rules, lambda plan: None, what=f"{exchange} {symbol} strategy"
            )
    plan = aim(plan, held, now=now, limits=limits)
    valid_until = snapshot.taken_at + timedelta(seconds=rt.config().plan_validity())
    plan = plan.model_copy(
        update={
            "fallback_reason": reason,
            "decided_at": snapshot.taken_at,
            "valid_until": valid_until,
        }
    )
    set_attributes(
        rung=plan.rung.value,
        action=plan.action,
        target=plan.target,
        fallback=plan.fallback_reason,
    )
    save(rt, run_id, exchange, symbol, "plan", data=plan.model_dump(mode="json"))
    return plan.action
