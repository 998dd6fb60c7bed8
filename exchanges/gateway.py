"""Call an exchange endpoint through ccxt: instances per process, our errors, sane results.

An endpoint is either a ccxt unified method (``"fetch_ticker"`` with ``{"symbol": ...}``) or a
REST path (``"/api/v3/ticker/price"`` or ``"GET /api/v3/ticker/price"``). Every call goes
through the fleet limiter (see ``exchanges/limited.py``) and raises our error tree. A result
that lacks what the call must return (ccxt hands malformed JSON to its parsers as text and
returns empty fields) is a MalformedResponseError, not data.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlparse

import ccxt

from core.config import AppConfig
from core.errors import InvalidRequestError, MalformedResponseError
from core.events import emit
from core.tracing import span
from exchanges.ccxt_factory import make_exchange
from exchanges.errors import translated
from ratelimit.manager import ExchangeRateLimitManager

WRITES = {"create_order", "cancel_order", "edit_order", "cancel_all_orders"}
CANCELS = {"cancel_order", "cancel_all_orders"}


def split_endpoint(endpoint: str) -> tuple[str, str]:
    """Return (method, path) of a REST endpoint such as ``"POST /api/v3/order"``."""
    method, _, path = endpoint.partition(" ")
    return (method.upper(), path) if path else ("GET", endpoint)


def is_write(endpoint: str) -> bool:
    """Return True for calls that can move money (orders and cancels)."""
    if endpoint.startswith(("/", "GET ", "POST ", "DELETE ", "PUT ")):
        return split_endpoint(endpoint)[0] in ("POST", "DELETE", "PUT")
    return endpoint in WRITES


def is_cancel(endpoint: str) -> bool:
    """Return True for cancels (allowed even in EMERGENCY)."""
    return endpoint in CANCELS or split_endpoint(endpoint)[0] == "DELETE"


def endpoint_class(endpoint: str) -> str:
    """Return the breaker class of an endpoint: ``orders``, ``private`` or ``public``."""
    if is_write(endpoint):
        return "orders"
    private = (
        "fetch_balance",
        "fetch_order",
        "fetch_orders",
        "fetch_open_orders",
        "fetch_closed_orders",
        "fetch_my_trades",
        "/api/v3/account",
        "/api/v3/order",
        "/api/v3/openOrders",
        "/api/v3/allOrders",
        "/api/v3/myTrades",
    )
    path = split_endpoint(endpoint)[1] if "/" in endpoint else endpoint
    return "private" if path in private else "public"


def check_result(endpoint: str, result: Any) -> Any:
    """Return ``result`` if it has what ``endpoint`` must return; else raise Malformed."""
    problem = None
    if isinstance(result, str | bytes):
        problem = "the answer is not JSON"
    elif endpoint == "fetch_ticker" and (
        not isinstance(result, dict) or result.get("last") is None
    ):
        problem = "a ticker without a last price"
    elif endpoint in ("fetch_tickers", "load_markets") and not isinstance(result, dict):
        problem = "no mapping of symbols"
    elif endpoint == "fetch_ohlcv" and not all(
        isinstance(row, list) and len(row) >= 6 and None not in row[:5] for row in result or []
    ):
        problem = "candles without prices"
    elif endpoint == "fetch_order_book" and not (
        isinstance(result, dict) and isinstance(result.get("bids"), list)
    ):
        problem = "an order book without bids"
    elif endpoint in ("create_order", "fetch_order") and not (
        isinstance(result, dict) and result.get("id")
    ):
        problem = "an order without an id"
    if problem:
        raise MalformedResponseError(f"{endpoint}: {problem}")
    return result


class CcxtGateway:
    """ccxt instances of this process (one per exchange, base URL and event loop)."""

    def __init__(
        self, config: AppConfig, limiter: ExchangeRateLimitManager, timeout_ms: int | None = None
    ) -> None:
        """``timeout_ms`` bounds each whole request; by default connect plus read timeout."""
        if timeout_ms is None:
            timeout_ms = int(config.request_seconds() * 1000)
        self.config, self.limiter, self.timeout_ms = config, limiter, timeout_ms
        self._instances: dict[tuple[str, str | None, int], Any] = {}

    def instance(self, exchange: str, base_url: str | None = None) -> Any:
        """Return this process's ccxt instance for an exchange (and alternative URL)."""
        if exchange not in self.config.exchanges:
            raise InvalidRequestError(
                f"unknown exchange {exchange!r}; configured: "
                f"{', '.join(self.config.exchanges) or 'none'}"
            )
        key = (exchange, base_url, id(asyncio.get_running_loop()))
        if key not in self._instances:
            pooling = self.config.performance.connection_pooling
            self._instances[key] = make_exchange(
                exchange,
                self.config.exchanges[exchange],
                timeout_ms=self.timeout_ms,
                pooling=pooling,
                limiter=self.limiter,
                max_wait=self.config.rate_limiting.max_wait,
                base_url=base_url,
            )
        return self._instances[key]

    async def call(
        self,
        exchange: str,
        endpoint: str,
        params: dict[str, Any] | None = None,
        base_url: str | None = None,
    ) -> Any:
        """Make one call (no retry); raise our error tree."""
        ex = self.instance(exchange, base_url)
        params = dict(params or {})
        started = time.monotonic()
        try:
            with span(
                "exchange.call", exchange=exchange, endpoint=endpoint, base_url=base_url or ""
            ):
                result = await self._call(ex, endpoint, params)
        except Exception as exc:
            emit(
                "exchange.request",
                exchange=exchange,
                endpoint=endpoint,
                outcome=type(exc).__name__,
                seconds=time.monotonic() - started,
            )
            raise
        emit(
            "exchange.request",
            exchange=exchange,
            endpoint=endpoint,
            outcome="ok",
            seconds=time.monotonic() - started,
        )
        return result

    async def _call(self, ex: Any, endpoint: str, params: dict[str, Any]) -> Any:
        exchange = ex.id
        with translated(write=is_write(endpoint), retry_after=lambda: _retry_after(ex)):
            try:
                if "/" in endpoint:
                    result = await self._raw(ex, endpoint, params)
                else:
                    method = getattr(ex, endpoint, None)
                    if method is None or endpoint.startswith("_"):
                        raise InvalidRequestError(f"{exchange}: no endpoint {endpoint!r}")
                    symbol = params.get("symbol")
                    if isinstance(symbol, str):
                        # ccxt loads the markets for a symbol's call anyway; its BadSymbol
                        # text is vaguer than this one line
                        await ex.load_markets()
                        if symbol not in ex.markets:
                            raise InvalidRequestError(f"{exchange} has no market {symbol!r}")
                    result = await method(**params)
            except (TypeError, KeyError, ValueError, AttributeError) as exc:
                if isinstance(exc, ccxt.BaseError):
                    raise
                raise MalformedResponseError(
                    f"{endpoint}: ccxt could not parse the answer: {exc}"
                ) from exc
        return check_result(endpoint, result)

    async def _raw(self, ex: Any, endpoint: str, params: dict[str, Any]) -> Any:
        method, path = split_endpoint(endpoint)
        signed = endpoint_class(endpoint) != "public"
        for api_name, base in ex.urls["api"].items():
            prefix = urlparse(base).path if isinstance(base, str) else ""
            if prefix and path.startswith(prefix + "/") and ("private" in api_name) == signed:
                return await ex.fetch2(path[len(prefix) + 1 :], [api_name], method, params)
        raise InvalidRequestError(f"no API of {ex.id} serves {path}")

    async def markets(self, exchange: str) -> dict[str, Any]:
        """Return the exchange's markets by unified symbol (loaded once per instance)."""
        ex = self.instance(exchange)
        with translated(write=False, retry_after=lambda: _retry_after(ex)):
            markets = await ex.load_markets()
        return dict(check_result("load_markets", markets))

    async def find_order(self, exchange: str, symbol: str, client_order_id: str) -> Any | None:
        """Return the order with this client order id, or None if the exchange has none."""
        ex = self.instance(exchange)
        try:
            with translated(write=False, retry_after=lambda: _retry_after(ex)):
                return await ex.fetch_order(None, symbol, {"origClientOrderId": client_order_id})
        except InvalidRequestError as exc:
            if isinstance(exc.__cause__, ccxt.OrderNotFound):
                return None
            raise

    async def close(self) -> None:
        """Close this event loop's HTTP sessions."""
        loop = id(asyncio.get_running_loop())
        for key in [k for k in self._instances if k[2] == loop]:
            await self._instances.pop(key).close()


def _retry_after(ex: Any) -> float | None:
    raw = (getattr(ex, "last_response_headers", None) or {}).get("Retry-After")
    try:
        return float(raw) if raw else None
    except ValueError:
        return None
