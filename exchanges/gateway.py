"""Call an exchange through ccxt: instances per process, our errors, sane results.

:meth:`CcxtGateway.call` makes one call of a :class:`~exchanges.request.Request` (a ccxt
unified method or a REST path, parsed once at the edge), with no retry. Every HTTP request
goes through the fleet limiter (``exchanges/limited.py``) and raises our error tree. A result
that lacks what the call must return is a MalformedResponseError, not data; so is an error
that ccxt's own code raised while reading the answer. An error raised by our code is a bug:
it propagates as it is, never retried and never counted against the exchange.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlparse

import ccxt

from core.config import AppConfig
from core.errors import InvalidRequestError, MalformedResponseError
from core.events import emit
from core.tracing import span
from exchanges.ccxt_factory import make_exchange
from exchanges.endpoints import check_result
from exchanges.errors import translated
from exchanges.profiles import ExchangeProfile, profile
from exchanges.request import Request, current_attempt
from ratelimit.manager import ExchangeRateLimitManager

_CCXT_DIR = str(Path(ccxt.__file__).parent)


_SIGNATURES: dict[Any, inspect.Signature] = {}


def _signature(method: Any) -> inspect.Signature:
    """Return a ccxt method's signature (cached per function: inspect is slow)."""
    key = getattr(method, "__func__", method)
    if key not in _SIGNATURES:
        _SIGNATURES[key] = inspect.signature(method)
    return _SIGNATURES[key]


def raised_by_ccxt(error: BaseException) -> bool:
    """Return True when the innermost frame of ``error``'s traceback is ccxt's code."""
    tb: TracebackType | None = error.__traceback__
    last = None
    while tb is not None:
        last, tb = tb, tb.tb_next
    return last is not None and last.tb_frame.f_code.co_filename.startswith(_CCXT_DIR)


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
        self._timeframes: dict[str, dict[str, Any]] = {}

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

    async def call(self, request: Request) -> Any:
        """Make one call (no retry); raise our error tree."""
        ex = self.instance(request.exchange, request.base_url)
        started = time.monotonic()
        outcome = "ok"
        try:
            with span(
                "exchange.call",
                exchange=request.exchange,
                endpoint=request.name,
                base_url=request.base_url or "",
            ):
                return await self._call(ex, request)
        except BaseException as exc:
            outcome = type(exc).__name__
            raise
        finally:
            attempt = current_attempt()
            # the exchange's latency is the wire time, not the limiter's waits
            seconds = attempt.wire if attempt is not None else time.monotonic() - started
            emit(
                "exchange.request",
                exchange=request.exchange,
                endpoint=request.name,
                outcome=outcome,
                seconds=seconds,
            )

    async def _call(self, ex: Any, request: Request) -> Any:
        endpoint, params = request.endpoint, dict(request.params)
        with translated(write=endpoint.write, retry_after=lambda: _retry_after(ex)):
            try:
                if endpoint.rest:
                    return await self._raw(ex, request)
                name = str(endpoint.method)
                method = getattr(ex, name, None)
                if method is None or name.startswith("_"):
                    raise InvalidRequestError(f"{ex.id}: no endpoint {name!r}")
                try:
                    _signature(method).bind(**params)
                except TypeError as exc:
                    raise InvalidRequestError(f"{ex.id} {name}: {exc}") from None
                symbol = params.get("symbol")
                if isinstance(symbol, str):
                    # ccxt loads the markets for a symbol's call anyway; its BadSymbol text is
                    # vaguer than this one line
                    await ex.load_markets()
                    if symbol not in ex.markets:
                        raise InvalidRequestError(f"{ex.id} has no market {symbol!r}")
                result = await method(**params)
            except ccxt.ExchangeError as exc:
                if not isinstance(exc, ccxt.OrderNotFound) and self.profile(
                    request.exchange
                ).order_missing(exc):
                    # the exchange says "no such order" in words ccxt does not map: a
                    # business answer, never a sign the exchange is unwell
                    raise ccxt.OrderNotFound(str(exc)) from exc
                raise
            except (TypeError, KeyError, ValueError, AttributeError, IndexError) as exc:
                if isinstance(exc, ccxt.BaseError) or not raised_by_ccxt(exc):
                    raise  # ccxt's own error, or a bug of ours: not the exchange's answer
                raise MalformedResponseError(
                    f"{name}: ccxt could not parse the answer: {exc}"
                ) from exc
        return check_result(name, result)

    async def _raw(self, ex: Any, request: Request) -> Any:
        http, path = request.endpoint.http, str(request.endpoint.path)
        signed = request.endpoint.klass != "public"
        for api_name, base in ex.urls["api"].items():
            prefix = urlparse(base).path if isinstance(base, str) else ""
            if prefix and path.startswith(prefix + "/") and ("private" in api_name) == signed:
                return await ex.fetch2(path[len(prefix) + 1 :], [api_name], http, request.params)
        raise InvalidRequestError(f"no API of {ex.id} serves {path}")

    def profile(self, exchange: str) -> ExchangeProfile:
        """Return the profile of a configured exchange (its ccxt id's)."""
        return profile(self.config.exchanges[exchange].ccxt_id or exchange)

    def timeframes(self, exchange: str) -> dict[str, Any]:
        """Return the candle timeframes of the exchange's ccxt class (no request made)."""
        if exchange not in self._timeframes:
            settings = self.config.exchanges[exchange]
            ccxt_class = getattr(ccxt, settings.ccxt_id or exchange)
            self._timeframes[exchange] = dict(ccxt_class().timeframes or {})
        return self._timeframes[exchange]

    def amount_to_precision(self, exchange: str, symbol: str, amount: float) -> float:
        """Return ``amount`` in the market's amount precision (the markets must be loaded)."""
        return float(self.instance(exchange).amount_to_precision(symbol, amount))

    def not_found(self, exchange: str, error: BaseException) -> bool:
        """Return True when ``error`` is the exchange saying the order does not exist."""
        return isinstance(error.__cause__, ccxt.OrderNotFound)

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
