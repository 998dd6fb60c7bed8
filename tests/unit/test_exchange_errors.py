"""Every ccxt exception the fleet meets maps to what the caller must do (ccxt as pinned)."""

from __future__ import annotations

import ccxt
import pytest

from core.errors import (
    AuthenticationError,
    ExchangeThrottledError,
    GiveUpError,
    InsufficientFundsError,
    InvalidRequestError,
    MalformedResponseError,
    OutcomeUnknownError,
    RetryableError,
)
from exchanges.errors import translate, translated


def test_pinned_ccxt_hierarchy_that_the_table_relies_on() -> None:
    assert issubclass(ccxt.DDoSProtection, ccxt.NetworkError)
    assert issubclass(ccxt.RateLimitExceeded, ccxt.NetworkError)
    assert not issubclass(ccxt.RateLimitExceeded, ccxt.DDoSProtection)
    assert not issubclass(ccxt.DDoSProtection, ccxt.RateLimitExceeded)
    assert issubclass(ccxt.OrderNotFound, ccxt.InvalidOrder)
    assert issubclass(ccxt.BadSymbol, ccxt.BadRequest)
    assert not issubclass(ccxt.OperationFailed, ccxt.ExchangeError)


@pytest.mark.parametrize(
    ("raised", "read", "write"),
    [
        (ccxt.DDoSProtection, ExchangeThrottledError, ExchangeThrottledError),
        (ccxt.RateLimitExceeded, ExchangeThrottledError, ExchangeThrottledError),
        (ccxt.RequestTimeout, RetryableError, OutcomeUnknownError),
        (ccxt.ExchangeNotAvailable, RetryableError, OutcomeUnknownError),
        (ccxt.OnMaintenance, RetryableError, OutcomeUnknownError),
        (ccxt.NetworkError, RetryableError, OutcomeUnknownError),
        (ccxt.OperationFailed, RetryableError, OutcomeUnknownError),
        (ccxt.InvalidNonce, RetryableError, RetryableError),
        (ccxt.BadResponse, MalformedResponseError, OutcomeUnknownError),
        (ccxt.NullResponse, MalformedResponseError, OutcomeUnknownError),
        (ccxt.AuthenticationError, AuthenticationError, AuthenticationError),
        (ccxt.PermissionDenied, AuthenticationError, AuthenticationError),
        (ccxt.InsufficientFunds, InsufficientFundsError, InsufficientFundsError),
        (ccxt.InvalidOrder, InvalidRequestError, InvalidRequestError),
        (ccxt.OrderNotFound, InvalidRequestError, InvalidRequestError),
        (ccxt.BadSymbol, InvalidRequestError, InvalidRequestError),
        (ccxt.BadRequest, InvalidRequestError, InvalidRequestError),
        (ccxt.NotSupported, InvalidRequestError, InvalidRequestError),
        (ccxt.OperationRejected, GiveUpError, GiveUpError),
        (ccxt.ExchangeError, RetryableError, GiveUpError),
    ],
)
def test_mapping(raised: type[Exception], read: type, write: type) -> None:
    assert type(translate(raised("x"), write=False)) is read
    assert type(translate(raised("x"), write=True)) is write


def test_throttle_carries_retry_after_and_the_original_stays_attached() -> None:
    with (
        pytest.raises(ExchangeThrottledError) as info,
        translated(write=False, retry_after=lambda: 17.0),
    ):
        raise ccxt.DDoSProtection("binance 429 Too Many Requests")
    assert info.value.retry_after == 17.0
    assert isinstance(info.value.__cause__, ccxt.DDoSProtection)
    assert "DDoSProtection: binance 429" in str(info.value)


def test_business_errors_are_give_up_errors() -> None:
    for exc in (ccxt.InsufficientFunds("x"), ccxt.BadSymbol("x"), ccxt.InvalidOrder("x")):
        assert isinstance(translate(exc, write=True), GiveUpError)
