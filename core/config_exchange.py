"""Config sections of one exchange: limits, breaker, sandbox (re-exported by core.config)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    field_validator,
    model_validator,
)

from core.config_base import Section, check_symbols
from core.urls import local_port

RateLimitType = Literal["token_bucket", "sliding_window", "leaky_bucket", "fixed_window"]

_REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "token_bucket": ("capacity", "rate"),
    "sliding_window": ("limit", "window"),
    "fixed_window": ("limit", "window"),
    "leaky_bucket": ("capacity", "leak_rate"),
}


class RateLimitRule(Section):
    """One pool of an exchange's budget, in the seed's shape (``type`` picks the fields)."""

    type: RateLimitType
    name: str | None = None
    capacity: PositiveFloat | None = None
    rate: PositiveFloat | None = None
    window: PositiveFloat | None = None
    limit: PositiveInt | None = None
    leak_rate: PositiveFloat | None = None

    @model_validator(mode="after")
    def _fields_for_type(self) -> RateLimitRule:
        missing = [f for f in _REQUIRED_FIELDS[self.type] if getattr(self, f) is None]
        if missing:
            raise ValueError(f"a {self.type} limit needs {' and '.join(missing)}")
        return self


class RateLimitingConfig(Section):
    """How the fleet shares each exchange's budget.

    ``safety_margin`` is the share of each *published* default limit the fleet leaves
    unused (limits you set under ``exchanges.<id>.rate_limits`` are taken as given).
    ``high_priority_reserve`` is the share of every pool that only high-priority requests
    (orders, cancels, stop-losses) may use. When Redis is unreachable, order paths always fail
    closed; market data either fails too (``fail``) or falls back to a limiter in each process
    with a ``1/fleet_processes`` share of the budget (``local_share``).
    """

    safety_margin: Annotated[float, Field(ge=0.0, le=0.5)] = 0.1
    high_priority_reserve: Annotated[float, Field(ge=0.0, lt=0.9)] = 0.2
    on_redis_unavailable: Literal["local_share", "fail"] = "local_share"
    fleet_processes: PositiveInt = 8
    max_wait: PositiveFloat = 75.0


class CircuitBreakerConfig(Section):
    """When a breaker opens and how long it stays open before one trial call."""

    failure_threshold: PositiveInt = 5
    recovery_timeout: PositiveFloat = 60.0
    #: A call the exchange still had not answered after this many seconds when its caller
    #: gave up counts as a failure (a slow exchange); one cut off sooner is the caller's
    #: impatience and does not count.
    slow_call_seconds: PositiveFloat = 5.0


SandboxFaultKind = Literal[
    "http_500",
    "http_503",
    "http_429",
    "hang",
    "reset",
    "malformed_json",
    "clock_skew",
    "response_lost",
]


class SandboxFault(Section):
    """A fault the sandbox injects: on which endpoint, how often, how many times."""

    kind: SandboxFaultKind
    endpoint: str = "*"
    rate: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0
    seconds: PositiveFloat = 30.0
    count: PositiveInt | None = None


class SandboxLimits(Section):
    """The limits the sandbox enforces, Binance's by default; ``time_scale`` shrinks windows."""

    request_weight_per_minute: PositiveInt = 6000
    raw_requests_per_5m: PositiveInt = 61000
    orders_per_10s: PositiveInt = 100
    orders_per_day: PositiveInt = 200000
    time_scale: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    ban_after: PositiveInt = 5
    ban_seconds: PositiveFloat = 120.0
    max_ban_seconds: PositiveFloat = 259200.0
    #: A dialect's own limits by the names its module documents (``sandbox/dialects/``),
    #: e.g. ``{"market_tickers_per_2s": 5}`` for OKX; unset ones are the exchange's.
    overrides: dict[str, PositiveFloat] = {}


class SandboxConfig(Section):
    """A local exchange speaking Binance's spot REST dialect (see sandbox/)."""

    seed: int = 42
    symbols: list[str] = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT", "XRP/USDT"]
    speed: PositiveFloat = 1.0
    history_days: Annotated[float, Field(gt=0.0, le=120.0)] = 30.0
    candles_file: Path | None = None
    state_file: Path | None = None
    fee_rate: Annotated[float, Field(ge=0.0, le=0.01)] = 0.001
    api_key: str = "sandbox-key"
    #: Base64 of "sandbox-secrets" without padding: Kraken's ccxt decodes its secret as
    #: base64 before signing, and Coinbase's takes one ending in "=" for a cloud (JWT) key.
    api_secret: SecretStr = SecretStr("c2FuZGJveC1zZWNyZXRz")
    #: The passphrase OKX (and others that ask for one) sign with.
    api_password: SecretStr = SecretStr("sandbox-passphrase")
    starting_balances: dict[str, NonNegativeFloat] = {"USDT": 10000.0, "BTC": 0.1, "ETH": 2.0}
    limits: SandboxLimits = SandboxLimits()
    faults: list[SandboxFault] = []

    @field_validator("symbols")
    @classmethod
    def _symbol_format(cls, values: list[str]) -> list[str]:
        return check_symbols(values)


class ExchangeConfig(Section):
    """One exchange account: which ccxt class, where it is, its keys and limits."""

    name: str | None = None
    ccxt_id: str | None = None
    base_url: str | None = None
    enabled: bool = True
    api_key: SecretStr | None = None
    api_secret: SecretStr | None = None
    password: SecretStr | None = None
    is_sandbox: bool | None = None
    rate_limits: list[RateLimitRule] = []
    circuit_breaker: CircuitBreakerConfig = CircuitBreakerConfig()
    sandbox: SandboxConfig = SandboxConfig()

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value.rstrip("/") if value else value

    @property
    def sandboxed(self) -> bool:
        """Return True when base_url is a sandbox (``is_sandbox``, else a URL on this host)."""
        if self.is_sandbox is not None:
            return self.is_sandbox
        return local_port(self.base_url) is not None

    @property
    def has_keys(self) -> bool:
        """Return True when both an API key and a secret are set."""
        return self.api_key is not None and self.api_secret is not None
