"""The I/O around the agents, one function per stage of an analysis run.

Each stage reads its inputs from Redis (under the run's keys), calls the pure agent, and
writes its output back; Celery tasks only decode arguments and call these. Big data never
travels in task arguments.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import aiohttp
from pydantic import ValidationError

from agents import features as feature_lib
from agents import news as news_lib
from agents import risk as risk_lib
from agents.analysts import analyse
from agents.llm import (
    CaseAnswer,
    LLMError,
    PlanAnswer,
    case_from_answer,
    climb,
    data_message,
    plan_from_answer,
    prompt,
    score_headlines,
)
from agents.orders import client_order_id
from agents.strategy import decide, size_for
from agents.types import AnalystReport, Candle, MarketSnapshot, NewsItem, Rung, TradePlan
from core.config import AppConfig, NewsAPIConfig
from core.errors import CryptoAIError, RetryableError
from core.events import emit
from core.tracing import set_attributes, span
from exchanges.http import request_timeout
from exchanges.limited import request_priority
from ratelimit.pools import Priority
from resilience import FallbackConfig
from resilience.cache import request_digest
from resilience.retry import RetryConfig, retry_async
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


def feed_urls(config: AppConfig, exchange: str) -> list[str]:
    """Return the feeds to read for an exchange: configured ones plus its sandbox's feed."""
    urls = list(config.news.feeds)
    base = config.exchanges[exchange].base_url or ""
    if config.news.sandbox_feeds and config.exchanges[exchange].sandboxed:
        urls.append(f"{base}/sandbox/news.rss")
    return urls


#: What a news source's fetch can fail with.
SOURCE_ERRORS = (aiohttp.ClientError, TimeoutError, ValueError, CryptoAIError)


async def _fleet_copy(rt: Runtime, source: str, fetch: Callable[[], Awaitable[Any]]) -> Any:
    """Return a news source's payload, fetched at most once per refresh period fleet-wide.

    Every symbol's news task reads the same sources: the first task in a
    ``news.refresh_seconds`` period fetches (coalesced across the fleet) and the others
    read the copy in Redis. A source that failed is not tried again for a refresh period by
    anyone in the fleet (a hung source costs one task its timeout, not every task);
    meanwhile the last copy is used, if there is one.
    """
    news = rt.config().news
    cache = rt.exchange_client().cache  # the process's bounded cache (caching.max_cache_size)
    digest, down = request_digest("news", source, {}), request_digest("news:down", source, {})
    cached = cache.get(digest)
    if cached is not None and cached.age() < news.refresh_seconds:
        return cached.value

    async def fetch_unless_down() -> Any:
        failed = cache.get(down)
        if failed is not None:
            raise aiohttp.ClientError(f"failed {failed.age():.0f}s ago: {failed.value}")
        try:
            return await fetch()
        except SOURCE_ERRORS as exc:
            cache.put(down, f"{type(exc).__name__}: {exc}", news.refresh_seconds)
            raise

    try:
        payload, _ = await rt.exchange_client().coalescer.run(digest, fetch_unless_down)
    except SOURCE_ERRORS:
        if cached is None:
            raise
        log.warning(
            "news source %s unavailable; using the copy from %.0fs ago", source, cached.age()
        )
        return cached.value
    cache.put(digest, payload, news.refresh_seconds * 10)
    return payload


async def _fetch_feed(rt: Runtime, url: str) -> str:
    """Return an RSS/Atom feed's text (once per refresh period fleet-wide, see _fleet_copy)."""
    pooling = rt.config().performance.connection_pooling
    timeout = request_timeout(pooling, rt.config().news.fetch_timeout)

    async def fetch() -> str:
        async with rt.http_session().get(url, timeout=timeout) as response:
            response.raise_for_status()
            return await response.text()

    return str(await _fleet_copy(rt, f"feed:{url}", fetch))


async def _fetch_api(rt: Runtime, api: NewsAPIConfig) -> list[NewsItem]:
    """Fetch one news API (once per refresh period fleet-wide) through its limiter pool."""
    config = rt.config()
    limiter = rt.exchange_client().limiter
    params = {api.token_param: api.token.get_secret_value()} if api.token else {}
    timeout = request_timeout(config.performance.connection_pooling, config.news.fetch_timeout)

    async def fetch() -> Any:
        await limiter.acquire_async(f"news:{api.name}", "get", max_wait=config.news.fetch_timeout)
        async with rt.http_session().get(api.url, params=params, timeout=timeout) as response:
            if response.status >= 500 or response.status == 429:
                raise RetryableError(f"news API {api.name} answered {response.status}")
            response.raise_for_status()
            return await response.json(content_type=None)

    payload = await _fleet_copy(
        rt,
        f"api:{api.name}:{api.url}",
        lambda: retry_async(fetch, RetryConfig(max_attempts=3, base_delay=0.5)),
    )
    fields = (api.title_field, api.published_field, api.url_field)
    return news_lib.parse_api(payload, api.name, api.items_path, fields)


async def _api_items(rt: Runtime) -> list[NewsItem]:
    items: list[NewsItem] = []
    for api in rt.config().news.apis:
        try:
            items += await _fetch_api(rt, api)
        except SOURCE_ERRORS as exc:
            log.warning("news API %s unavailable: %s", api.name, exc)
    return items


async def collect_news(
    rt: Runtime, run_id: str, exchange: str, symbol: str, decided_at: str
) -> int:
    """Read the feeds and files, keep the items usable at the decision time; return the count."""
    config = rt.config()
    items: list[NewsItem] = []
    for url in feed_urls(config, exchange):
        try:
            text = await _fetch_feed(rt, url)
        except SOURCE_ERRORS as exc:
            log.warning("news feed %s unavailable: %s", url, exc)
            continue
        items += news_lib.parse_feed(text, source=url)
    items += await _api_items(rt)
    for path in config.news.files:
        items += news_lib.parse_feed(Path(path).read_bytes(), source=str(path))
    decision_time = datetime.fromisoformat(decided_at)
    lookback = decision_time - timedelta(hours=config.news.lookback_hours)
    usable = [
        i for i in news_lib.prepare(items, [symbol], decision_time) if i.published >= lookback
    ]
    relevant = [i for i in usable if symbol in i.symbols]
    model = rt.llm()
    if model is not None and relevant:
        try:  # the LLM scores the headlines; the lexicon's scores stay if it cannot
            relevant = await score_headlines(model, symbol, relevant)
        except (LLMError, ValidationError) as exc:
            log.warning("LLM sentiment for %s failed (%s); keeping the lexicon's", symbol, exc)
    save(rt, run_id, exchange, symbol, "news", data=[i.model_dump(mode="json") for i in relevant])
    return len(relevant)


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
    reads = [
        client.resilient_request(
            exchange,
            "fetch_ohlcv",
            {"symbol": symbol, "timeframe": timeframe, "limit": 100},
            partial,
        )
        for timeframe in timeframes
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
            for r in answer.data
        ]
        for timeframe, answer in zip(timeframes, series, strict=True)
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


LLM_CACHE_SECONDS = 900.0
#: Reads for the risk guard and orders: fresh (no fallback), but may wait for the budget.
FRESH = FallbackConfig(level="none", timeout=150)


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
        report = rules()
    else:
        cache = rt.exchange_client().cache
        digest = request_digest(exchange, f"llm:case:{side}", {"symbol": symbol})
        system = prompt("case", side=side, symbol=symbol)
        user = data_message(feats, items, symbol=symbol, last=snapshot.last)

        async def ask() -> AnalystReport:
            return case_from_answer(
                case_side, await model.complete(CaseAnswer, system, user), Rung.LLM
            )

        def cached() -> AnalystReport | None:
            hit = cache.get(digest)
            if hit is None or hit.age() > LLM_CACHE_SECONDS:
                return None
            return case_from_answer(case_side, CaseAnswer.model_validate(hit.value), Rung.CACHE)

        def remember(report: AnalystReport) -> None:
            answer = CaseAnswer(
                thesis=report.thesis,
                evidence=report.evidence,
                confidence=report.confidence,
                invalidation=report.invalidation,
            )
            cache.put(digest, answer.model_dump(mode="json"), LLM_CACHE_SECONDS)

        report, _ = await climb(ask, cached, rules, remember)
    set_attributes(rung=report.rung.value, confidence=report.confidence)
    save(rt, run_id, exchange, symbol, side, data=report.model_dump(mode="json"))
    return report.confidence


async def strategy(rt: Runtime, run_id: str, exchange: str, symbol: str) -> str:
    """Weigh both cases into a plan (LLM -> rules); return its action."""
    snapshot = MarketSnapshot.model_validate(load(rt, run_id, exchange, symbol, "snapshot"))
    long = AnalystReport.model_validate(load(rt, run_id, exchange, symbol, "long"))
    short = AnalystReport.model_validate(load(rt, run_id, exchange, symbol, "short"))
    feats = feature_lib.compute(snapshot, PRIMARY_TIMEFRAME)
    limits = rt.config().trading.risk

    def rules() -> TradePlan:
        return decide(symbol, long, short, feats, limits)

    model = rt.llm()
    if model is None or feats.atr is None:
        plan = rules()
    else:
        system = prompt("plan", symbol=symbol, entry=feats.close)
        user = data_message(
            feats, [], long=long.model_dump(mode="json"), short=short.model_dump(mode="json")
        )

        async def ask() -> TradePlan:
            answer = await model.complete(PlanAnswer, system, user)
            size = size_for(feats.close, feats.atr or 0.0, answer.confidence, limits)
            return plan_from_answer(symbol, feats.close, size, answer, Rung.LLM)

        plan, _ = await climb(ask, lambda: None, rules, lambda plan: None)
    set_attributes(rung=plan.rung.value, action=plan.action)
    save(rt, run_id, exchange, symbol, "plan", data=plan.model_dump(mode="json"))
    return plan.action


async def account_equity(rt: Runtime, exchange: str, balance: dict[str, Any]) -> float:
    """Return the account's value in the quote currency (USDT), over the watched assets."""
    totals = balance.get("total") or {}
    equity = float(totals.get("USDT") or 0.0)
    client, watchlist = rt.exchange_client(), rt.config().watched(exchange)
    max_age = rt.config().performance.batch_processing.watchlist_max_age
    # prices from the watchlist's shared batched read, the snapshots' (at most max_age old)
    recent = FallbackConfig(level="none", timeout=150, fresh_ttl=max_age)
    for symbol in watchlist:
        amount = float(totals.get(symbol.split("/")[0]) or 0.0)
        if amount and symbol.endswith("/USDT"):
            answer = await client.resilient_within(
                exchange, "fetch_ticker", symbol, watchlist, recent
            )
            equity += amount * float(answer.data["last"])
    return equity


def daily_pnl(rt: Runtime, exchange: str, equity: float) -> float:
    """Return today's (UTC) change in equity: the first equity seen today is the baseline."""
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    key = f"{rt.keyspace().prefix}fleet:equity:{exchange}:{day}"
    client = rt.redis_client()
    client.set(key, repr(equity), nx=True, ex=3 * 86400)
    return equity - float(client.get(key) or equity)  # type: ignore[arg-type]


async def _risk_state(rt: Runtime, exchange: str, symbol: str) -> risk_lib.RiskState:
    client = rt.exchange_client()
    # together: the ticker and balance reads each wait for their batch to close
    ticker_answer, balance_answer, open_answer = await asyncio.gather(
        client.resilient_request(exchange, "fetch_ticker", {"symbol": symbol}, FRESH),
        client.resilient_request(exchange, "fetch_balance", {}, FRESH),
        client.resilient_request(exchange, "fetch_open_orders", {"symbol": symbol}, FRESH),
    )
    ticker, balance, opened = ticker_answer.data, balance_answer.data, open_answer.data
    pnl = daily_pnl(rt, exchange, await account_equity(rt, exchange, balance))
    base = symbol.split("/", maxsplit=1)[0]
    return risk_lib.RiskState(
        market_price=float(ticker["last"]),
        position=float((balance.get("free") or {}).get(base) or 0.0),
        open_orders=len(opened),
        daily_pnl=pnl,
        kill_switch=bool(rt.redis_client().exists(rt.keyspace().kill_switch())),
    )


async def execute(rt: Runtime, run_id: str, exchange: str, symbol: str) -> dict[str, Any]:
    """Check the plan against the risk guard and place at most one order for it.

    Idempotent: the client order id is derived from the run and the plan, and an order with
    that id is looked up before anything is sent, so a redelivered task finds its order.
    """
    config = rt.config()
    plan = TradePlan.model_validate(load(rt, run_id, exchange, symbol, "plan"))
    outcome: dict[str, Any] = {"action": plan.action, "mode": config.trading.mode}
    if plan.action == "hold":
        outcome["risk"] = {"approved": False, "reasons": ["hold"]}
        save(rt, run_id, exchange, symbol, "execution", data=outcome)
        return outcome
    with request_priority(Priority.HIGH):  # the pools' high-priority reserve is for this
        state = await _risk_state(rt, exchange, symbol)
    decision = risk_lib.check(plan, config.trading.risk, state)
    outcome["risk"] = {
        "approved": decision.approved,
        "size": decision.size,
        "reasons": decision.reasons,
    }
    if decision.approved:
        with (
            span("order", exchange=exchange, symbol=symbol, side=plan.action) as current,
            request_priority(Priority.HIGH),
        ):
            outcome["order"] = await _place(rt, run_id, exchange, plan, decision.size)
            current.set_attributes(
                {
                    "client_order_id": str(outcome["order"].get("clientOrderId")),
                    "outcome": str(outcome["order"].get("status")),
                }
            )
        emit("order", exchange=exchange, outcome=str(outcome["order"].get("status")))
    else:
        emit("risk.rejected", reason=decision.reasons[0].split(" ")[0] if decision.reasons else "")
    save(rt, run_id, exchange, symbol, "execution", data=outcome)
    return outcome


async def _place(
    rt: Runtime, run_id: str, exchange: str, plan: TradePlan, size: float
) -> dict[str, Any]:
    client = rt.exchange_client()
    cid = client_order_id(run_id, exchange, plan.symbol, plan.action)
    config = rt.config()
    if config.trading.mode == "paper" and not config.exchanges[exchange].sandboxed:
        # paper trading against a real exchange: simulate the fill, send nothing
        price = plan.entry or 0.0
        return {
            "id": None,
            "clientOrderId": cid,
            "status": "simulated",
            "side": plan.action,
            "amount": size,
            "filled": size,
            "average": price,
            "cost": size * price,
            "source": "paper",
        }
    existing = await client.gateway.find_order(exchange, plan.symbol, cid)
    if existing is not None:
        log.info(
            "run %s: order %s already exists (redelivered task); not placing again", run_id, cid
        )
        return _order_summary(existing, "found")
    market = client.gateway.instance(exchange)
    await market.load_markets()
    amount = float(market.amount_to_precision(plan.symbol, size))
    answer = await client.resilient_request(
        exchange,
        "create_order",
        {
            "symbol": plan.symbol,
            "type": "market",
            "side": plan.action,
            "amount": amount,
            "params": {"clientOrderId": cid},
        },
        FRESH,
    )
    return _order_summary(answer.data, answer.source)


def _order_summary(order: dict[str, Any], source: str) -> dict[str, Any]:
    keys = ("id", "clientOrderId", "status", "side", "amount", "filled", "average", "cost")
    return {**{k: order.get(k) for k in keys}, "source": source}
