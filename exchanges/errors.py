"""Translate ccxt's exceptions into our error tree, by what the caller must do.

One table, most specific class first. In the ccxt we pin (4.5), a Binance 429/418 raises
``DDoSProtection`` and ``RateLimitExceeded`` is its sibling under ``NetworkError``, not its
child; both mean "back off". ``OperationFailed`` (Binance's -1000/-1001 bodies on 5xx) and the
network errors are retryable for reads; for writes they leave the outcome unknown, so the
order must be looked up before anything is sent again.

ccxt's messages quote the request (its URL with the signature, sometimes the body the
exchange answered, which may echo the key): both the translated message and the ccxt
exception kept as its cause are redacted here, at the edge.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import ccxt

from core.errors import (
    AuthenticationError,
    CryptoAIError,
    ExchangeThrottledError,
    GiveUpError,
    InsufficientFundsError,
    InvalidRequestError,
    MalformedResponseError,
    OutcomeUnknownError,
    RetryableError,
)
from core.redact import redact, scrub_exception

#: Seconds to back off after a 429/418 that came without a Retry-After header.
DEFAULT_BACKOFF = 60.0

# (ccxt class, our class for a read, our class for a write); the first match wins.
_TABLE: list[tuple[type[Exception], type[CryptoAIError], type[CryptoAIError]]] = [
    (ccxt.DDoSProtection, ExchangeThrottledError, ExchangeThrottledError),
    (ccxt.RateLimitExceeded, ExchangeThrottledError, ExchangeThrottledError),
    (ccxt.InvalidNonce, RetryableError, RetryableError),
    (ccxt.RequestTimeout, RetryableError, OutcomeUnknownError),
    (ccxt.BadResponse, MalformedResponseError, OutcomeUnknownError),
    (ccxt.OperationFailed, RetryableError, OutcomeUnknownError),
    (ccxt.AuthenticationError, AuthenticationError, AuthenticationError),
    (ccxt.InsufficientFunds, InsufficientFundsError, InsufficientFundsError),
    (ccxt.InvalidOrder, InvalidRequestError, InvalidRequestError),
    (ccxt.BadRequest, InvalidRequestError, InvalidRequestError),
    (ccxt.NotSupported, InvalidRequestError, InvalidRequestError),
    (ccxt.ArgumentsRequired, InvalidRequestError, InvalidRequestError),
    (ccxt.OperationRejected, GiveUpError, GiveUpError),
    (ccxt.ExchangeError, RetryableError, GiveUpError),
]


def translate(
    exc: Exception, *, write: bool, retry_after: float | None = None
) -> CryptoAIError | None:
    """Return our error for a ccxt exception (None if it is not ccxt's)."""
    for ccxt_class, for_read, for_write in _TABLE:
        if isinstance(exc, ccxt_class):
            ours = for_write if write else for_read
            message = redact(f"{type(exc).__name__}: {exc}")
            if issubclass(ours, ExchangeThrottledError):
                return ExchangeThrottledError(message, retry_after or DEFAULT_BACKOFF)
            return ours(message)
    return None


@contextmanager
def translated(
    *, write: bool, retry_after: Callable[[], float | None] = lambda: None
) -> Iterator[None]:
    """Raise our error (``from`` the ccxt one, redacted) for any ccxt exception in the block."""
    try:
        yield
    except ccxt.BaseError as exc:
        scrub_exception(exc)  # in place: ccxt's text is its arguments, and callers test its type
        ours = translate(exc, write=write, retry_after=retry_after())
        if ours is None:
            raise
        raise ours from exc
