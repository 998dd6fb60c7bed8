"""Reads of many symbols: joined into the fleet's batches and split into the cheapest calls.

Three ways in, all served by :meth:`Batches.run` (the fewest-weight batched calls for a list
of symbols, per ``exchanges/batching.py``; unknown symbols answered without a call):

- :meth:`Batches.join`: one ``fetch_ticker`` joins the fleet's open batch of its kind
  (``resilience/batching.py``); the batch's leader makes the calls for every member;
- the client's ``resilient_within``: one symbol read together with its whole watchlist;
- the client's ``resilient_many``: many symbols now.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from core.config import AppConfig
from core.errors import CryptoAIError, InvalidRequestError
from core.events import emit
from core.tracing import add_event
from exchanges.batching import SHARED_READS, BatchRule, plan, rule_for
from exchanges.endpoints import check_result
from exchanges.request import Request
from ratelimit.manager import ExchangeRateLimitManager
from resilience.attempt import Breakers
from resilience.batching import FleetBatcher, Outcomes


class Batches:
    """Batched reads of this process; see the module docstring."""

    def __init__(
        self,
        config: AppConfig,
        read: Callable[[Request], Awaitable[Any]],
        batcher: FleetBatcher,
        limiter: ExchangeRateLimitManager,
        breakers: Breakers,
    ) -> None:
        self.config, self.read, self.batcher = config, read, batcher
        self.limiter, self.breakers = limiter, breakers
        self.enabled = config.performance.batch_processing.enabled

    def rule(self, request: Request) -> BatchRule | None:
        """Return the batching rule of the request's kind on its exchange, if any."""
        settings = self.config.exchanges[request.exchange]
        return rule_for(settings.ccxt_id or request.exchange, request.name)

    def batchable(self, request: Request) -> bool:
        """Return True when the request may join a fleet batch."""
        if not self.enabled:
            return False
        if request.name in SHARED_READS:
            return not request.params
        return set(request.params) == {"symbol"} and self.rule(request) is not None

    async def join(self, request: Request) -> tuple[Any, bool]:
        """Join the fleet's open batch for this kind of request; return (data, batched)."""
        # open breaker: no batch to wait for
        await self.breakers(request.exchange, request.endpoint.klass).check()
        # requests of one priority share a batch: the leader's call spends that priority
        kind = f"{request.exchange}:{request.name}" + (
            f":{request.priority.name.lower()}" if request.priority is not None else ""
        )
        outcome = await self.batcher.submit(
            kind,
            str(request.params.get("symbol", "*")),
            lambda items: self.run(request, items),
        )
        if outcome is None:  # the batch's leader vanished: ask alone
            return await self.read(request), False
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome, True

    async def run(self, request: Request, symbols: list[str]) -> Outcomes:
        """Fetch ``symbols`` in the cheapest calls; return each symbol's data or error.

        Unknown symbols are answered with InvalidRequestError without reaching the exchange,
        so one bad symbol cannot fail the others' batched call.
        """
        exchange = request.exchange
        if request.name in SHARED_READS:  # one call answers every (identical) request
            try:
                data: Any = await self.read(request.to(request.name))
            except (CryptoAIError, TimeoutError) as error:
                data = error
            emit("batch.flushed", exchange=exchange, endpoint=request.name, items=len(symbols))
            return dict.fromkeys(symbols, data)
        rule = self.rule(request)
        if rule is None:
            raise InvalidRequestError(f"{exchange}: {request.name} has no batched form")
        try:
            markets = await self.read(request.to("load_markets"))
        except (CryptoAIError, TimeoutError) as error:
            return dict.fromkeys(symbols, error)
        outcomes: Outcomes = {}
        known = []
        for symbol in symbols:
            if symbol in markets:
                known.append(symbol)
            else:
                outcomes[symbol] = InvalidRequestError(f"{exchange} has no market {symbol!r}")
        chunks, start = [], 0
        for size in plan(len(known), self.limiter.table(exchange), rule):
            chunks.append(known[start : start + size])
            start += size
        results = await asyncio.gather(
            *(self._chunk(request, rule, chunk) for chunk in chunks), return_exceptions=True
        )
        for chunk, result in zip(chunks, results, strict=True):
            if isinstance(result, BaseException):
                outcomes.update(dict.fromkeys(chunk, result))
            else:
                outcomes.update(result)
        emit("batch.flushed", exchange=exchange, endpoint=request.name, items=len(symbols))
        add_event("batch", endpoint=request.name, items=len(symbols), calls=len(chunks))
        return outcomes

    async def _chunk(self, request: Request, rule: BatchRule, chunk: list[str]) -> Outcomes:
        if len(chunk) == 1:  # alone, the single call is never dearer than a batch of one
            return {chunk[0]: await self.read(request.to(rule.single, {"symbol": chunk[0]}))}
        data = await self.read(request.to(rule.batched, {"symbols": chunk}))
        outcomes: Outcomes = {}
        for symbol in chunk:
            try:
                outcomes[symbol] = check_result(rule.single, (data or {}).get(symbol))
            except CryptoAIError as error:
                outcomes[symbol] = error
        return outcomes
