"""Sending the writes the order gate approved: never retried blind, reconciled by id.

Only the order gate (``resilience/orders.py``) calls :meth:`Writes.send`; anything else
would bypass paper mode, the risk guard and the client order id claim. A write goes through
the same attempt as a read (breaker, limiter, deadline: ``resilience/attempt.py``) but is
not retried: when its outcome is unknown (a timeout, a 5xx, a reset after sending) the
order is looked up by its client order id, and sent again only if the exchange has none.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from core.errors import CryptoAIError, OutcomeUnknownError
from exchanges.gateway import CcxtGateway
from exchanges.request import Request
from resilience.retry import RetryConfig

log = logging.getLogger(__name__)


class Writes:
    """Send approved writes and look orders up; see the module docstring."""

    def __init__(
        self,
        *,
        send: Callable[[Request], Awaitable[Any]],
        read: Callable[[Request], Awaitable[Any]],
        gateway: CcxtGateway,
        retry: RetryConfig,
        sleep: Callable[[float], Awaitable[Any]],
        lookup_seconds: float,
    ) -> None:
        self.send_once, self.read, self.gateway = send, read, gateway
        self.retry, self.sleep = retry, sleep
        #: Lookups get their own deadline: the write they check may have used its own up.
        self.lookup_seconds = lookup_seconds

    async def send(
        self, request: Request, on_attempt: Callable[[], Awaitable[None]] | None = None
    ) -> tuple[Any, str]:
        """Send an approved write; return (data, ``exchange`` or ``reconciled``).

        ``on_attempt`` runs before every exchange call (the gate renews its leases there).
        """
        attempts = self.retry.max_attempts
        for attempt in range(1, attempts + 1):
            if on_attempt is not None:
                await on_attempt()
            try:
                return await self.send_once(request), "exchange"
            except OutcomeUnknownError as error:
                log.warning(
                    "%s %s: outcome unknown (%s); looking the order up",
                    request.exchange,
                    request.name,
                    error,
                )
                if on_attempt is not None:
                    await on_attempt()
                found = await self.reconcile(request)
                if found is not None:
                    return found, "reconciled"
                if attempt == attempts:
                    raise
                await self.sleep(self.retry.backoff(attempt - 1))
        raise AssertionError("unreachable")

    async def completed(self, request: Request, order: Any) -> Any:
        """Return the order as the exchange has it now, when the create's answer lacks its
        status (OKX and Kraken answer a create with ids only); as it is otherwise, or when
        the exchange cannot say (the order itself stands)."""
        if not isinstance(order, dict) or order.get("status") or not order.get("id"):
            return order
        symbol = str(request.params.get("symbol", ""))
        lookup = request.to(
            "fetch_order", {"id": order["id"], "symbol": symbol}, timeout=self.lookup_seconds
        )
        try:
            found = await self.read(lookup)
        except CryptoAIError as error:
            log.warning("%s order %s: no status yet (%s)", request.exchange, order["id"], error)
            return order
        return {**order, **{k: v for k, v in dict(found).items() if v is not None}}

    async def find_order(self, request: Request, symbol: str, client_order_id: str) -> Any:
        """Return the order with this client order id (reads retried), or None.

        The exchange's profile names the ccxt methods that can find it (``fetch_order`` with
        the id in params; Kraken: its open, then closed orders).
        """
        rules = self.gateway.profile(request.exchange)
        for method in rules.lookup_methods:
            params: dict[str, Any] = {"symbol": symbol, "params": rules.lookup(client_order_id)}
            if method == "fetch_order":
                params["id"] = None
            try:
                found = await self.read(request.to(method, params, timeout=self.lookup_seconds))
            except CryptoAIError as error:
                if self.gateway.not_found(request.exchange, error):
                    continue
                raise
            if isinstance(found, list):
                found = next((o for o in found if o.get("clientOrderId") == client_order_id), None)
            if found is not None:
                return found
        return None

    async def to_precision(self, request: Request, symbol: str, amount: float, mode: str) -> float:
        """Return ``amount`` in the market's amount precision (as is when markets are unread
        in paper mode)."""
        try:
            await self.read(request.to("load_markets", timeout=self.lookup_seconds))
        except CryptoAIError:
            if mode != "paper":
                raise
            return amount
        # the risk guard's ticker read has refused an unknown symbol already
        return self.gateway.amount_to_precision(request.exchange, symbol, amount)

    async def reconcile(self, request: Request) -> Any:
        """Return the order this write made, if the exchange has it; else None."""
        params = request.params
        symbol = str(params.get("symbol", ""))
        if request.name in ("create_order", "edit_order"):
            return await self.find_order(request, symbol, params["params"]["clientOrderId"])
        if request.name == "cancel_order":
            order = await self.read(
                request.to(
                    "fetch_order",
                    {"id": params.get("id"), "symbol": symbol},
                    timeout=self.lookup_seconds,
                )
            )
            return order if order.get("status") == "canceled" else None
        return None
