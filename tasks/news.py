"""The news stage: feeds, APIs and files read once per refresh period fleet-wide.

News text is untrusted: it is screened and scored here (``agents/news.py``) and reaches the
analysts only as data, never as instructions.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from agents import news as news_lib
from agents.llm import LLM_FAILURES, NO_LLM, fallback_reason, score_headlines
from agents.types import NewsItem
from core.config import AppConfig, NewsAPIConfig
from core.errors import CryptoAIError, RetryableError
from core.redact import redact
from exchanges.http import request_timeout
from llm.usage import stage_scope
from resilience.cache import request_digest
from resilience.retry import RetryConfig, retry_async
from tasks.context import Runtime
from tasks.stages import save

log = logging.getLogger(__name__)


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
    cached = await cache.get(digest)
    if cached is not None and cached.age() < news.refresh_seconds:
        return cached.value

    async def fetch_unless_down() -> Any:
        failed = await cache.get(down)
        if failed is not None:
            raise aiohttp.ClientError(redact(f"failed {failed.age():.0f}s ago: {failed.value}"))
        try:
            return await fetch()
        except SOURCE_ERRORS as exc:
            # the copy is shared fleet-wide: aiohttp's text quotes the URL and its token
            await cache.put(down, redact(f"{type(exc).__name__}: {exc}"), news.refresh_seconds)
            raise

    try:
        payload, _ = await rt.exchange_client().coalescer.run(digest, fetch_unless_down)
    except SOURCE_ERRORS:
        if cached is None:
            raise
        log.warning(
            "news source %s unavailable; using the copy from %.0fs ago",
            redact(source),
            cached.age(),
        )
        return cached.value
    await cache.put(digest, payload, news.refresh_seconds * 10)
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
            log.warning("news API %s unavailable: %s", api.name, redact(str(exc)))
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
            log.warning("news feed %s unavailable: %s", redact(url), redact(str(exc)))
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
    scored: dict[str, Any] = {"rung": "lexicon", "reason": None}
    if model is None:
        scored["reason"] = NO_LLM
    elif not relevant:
        scored["reason"] = "no headline to score"
    else:
        try:  # the LLM scores the headlines; the lexicon's scores stay if it cannot
            with stage_scope(run_id, exchange, symbol, "news"):
                relevant = await score_headlines(model, symbol, relevant)
        except LLM_FAILURES as exc:
            scored["reason"] = fallback_reason(exc)
            log.warning(
                "LLM sentiment for %s failed (%s); keeping the lexicon's", symbol, redact(str(exc))
            )
        else:
            scored["rung"] = "llm"
    save(rt, run_id, exchange, symbol, "news", data=[i.model_dump(mode="json") for i in relevant])
    save(rt, run_id, exchange, symbol, "sentiment", data=scored)
    return len(relevant)
