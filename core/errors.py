"""The one error tree of crypto_ai_trading, grouped by what the caller must do.

    CryptoAIError
    ├── ConfigError                 stop: the configuration is wrong; fix the file or env
    ├── RetryableError              retry: the same call may succeed soon (timeouts, 5xx)
    │   ├── OutcomeUnknownError     reconcile first: a write may or may not have happened
    │   ├── MalformedResponseError  the exchange answered something that does not parse
    │   └── CircuitOpenError        the breaker is open; ``retry_after`` says until when
    ├── BackOffError                back off: wait ``retry_after`` seconds, spend no budget
    │   ├── RateLimitedError        our own limiter said no (never counts as a failure)
    │   └── ExchangeThrottledError  the exchange said 429/418; a fleet-wide cooldown is set
    ├── GiveUpError                 give up: retrying cannot help (business errors)
    │   ├── InvalidRequestError     bad symbol, bad quantity, unsupported call
    │   ├── InsufficientFundsError  the account cannot pay for it
    │   └── OrderRefusedError       the order gate refused the order (paper mode, risk
    │                               limits, kill switch, a stale plan); nothing was sent
    └── StopError                   stop trading: something is unsafe to continue
        ├── LimiterUnavailableError the shared limiter's Redis is unreachable (order paths
        │                           fail closed on it)
        └── AuthenticationError     keys are wrong or revoked

Business errors (``GiveUpError``) never trip a circuit breaker and are never retried.
Vendor exceptions are translated into this tree at the edge that calls the vendor, with
``raise ... from exc`` so the original stays attached. Every message is redacted when the
error is made (``core/redact.py``): these texts end up in logs, task results and reports.
"""

from __future__ import annotations

from core.redact import redact


class CryptoAIError(Exception):
    """Base of every error this project raises on purpose."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))


class ConfigError(CryptoAIError):
    """Report a configuration problem, naming the file and the field path."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        """Return the error as an operator reads it: one line for one problem (the file, the
        field, what was wrong), else a head line and one line per problem."""
        count = len(self.problems)
        if count == 1:
            ((path, message),) = self.problems
            return f"invalid configuration in {self.source}: {path or '<root>'}: {message}"
        head = f"invalid configuration in {self.source} ({count} problems):"
        lines = [f"  {path or '<root>'}: {message}" for path, message in self.problems]
        return "\n".join([head, *lines])


class RetryableError(CryptoAIError):
    """The same call may succeed if made again after a short wait."""


class OutcomeUnknownError(RetryableError):
    """A write was sent but its outcome is unknown; look it up before sending again."""


class MalformedResponseError(RetryableError):
    """The exchange's answer did not parse or lacks what the call must return."""


class CircuitOpenError(RetryableError):
    """The circuit breaker for this exchange and endpoint class is open fleet-wide."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BackOffError(CryptoAIError):
    """Wait before calling again; ``retry_after`` says how long, in seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimitedError(BackOffError):
    """The fleet's shared limiter did not admit the call within the allowed wait."""


class ExchangeThrottledError(BackOffError):
    """The exchange answered 429 or 418; the fleet cools down for ``retry_after``."""


class GiveUpError(CryptoAIError):
    """Retrying cannot help: the request itself is wrong or cannot be paid for."""


class InvalidRequestError(GiveUpError):
    """The exchange rejected the request as invalid (symbol, quantity, parameters)."""


class InsufficientFundsError(GiveUpError):
    """The account's balance does not cover the order."""


class OrderRefusedError(GiveUpError):
    """The order gate refused an order before anything was sent; ``reasons`` say why."""

    def __init__(self, message: str, reasons: list[str] | None = None) -> None:
        super().__init__(message)
        self.reasons = reasons or [message]


class StopError(CryptoAIError):
    """Continuing would be unsafe; stop the affected path and alert an operator."""


class LimiterUnavailableError(StopError):
    """The shared rate limiter's Redis cannot be reached."""


class AuthenticationError(StopError):
    """The exchange rejected the credentials."""
