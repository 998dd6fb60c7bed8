"""The configuration model tree: the seed's ``config.yaml`` schema plus what the fleet needs.

Every section validates itself and rejects unknown keys, so a typo such as
``failure_treshold`` is reported by name instead of silently ignored. Secrets are
``SecretStr``: they print as ``**********`` and reach no log, task argument or report.
Load a file with :func:`core.config_loader.load_config`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    field_validator,
    model_validator,
)

from core.config_base import (
    EXCHANGE_ALIASES,
    PRIORITY_QUEUES,
    SUPPORTED_EXCHANGES,
    Section,
    check_symbols,
)
from core.config_exchange import (
    CircuitBreakerConfig,
    ExchangeConfig,
    RateLimitingConfig,
    RateLimitRule,
    RateLimitType,
    SandboxConfig,
    SandboxFault,
    SandboxFaultKind,
    SandboxLimits,
)

__all__ = [
    "EXCHANGE_ALIASES",
    "PRIORITY_QUEUES",
    "SUPPORTED_EXCHANGES",
    "AppConfig",
    "CircuitBreakerConfig",
    "ExchangeConfig",
    "RateLimitRule",
    "RateLimitType",
    "RateLimitingConfig",
    "SandboxConfig",
    "SandboxFault",
    "SandboxFaultKind",
    "SandboxLimits",
    "Section",
    "check_symbols",
]


class ConnectionPoolConfig(Section):
    """The Redis connection pool of each process."""

    max_connections: PositiveInt = 50
    retry_on_timeout: bool = True
    socket_timeout: PositiveFloat = 5.0
    socket_connect_timeout: PositiveFloat = 5.0
    health_check_interval: NonNegativeInt = 25


class EmbeddedRedisConfig(Section):
    """Where the embedded redis-server keeps its files when no Redis is configured."""

    dir: Path = Path(".crypto-ai/redis")
    appendonly: bool = True
    #: ``always``: no acknowledged write is lost to a crash (an fsync per write);
    #: ``everysec``: faster, loses up to the last second of writes; ``no``: the OS decides
    appendfsync: Literal["always", "everysec", "no"] = "always"


class RedisConfig(Section):
    """Which Redis the fleet shares. No ``url`` and no ``host`` means the embedded server."""

    url: SecretStr | None = None
    host: str | None = None
    port: Annotated[int, Field(ge=1, le=65535)] = 6379
    db: NonNegativeInt = 0
    username: str | None = None
    password: SecretStr | None = None
    ssl: bool = False
    ssl_cert_reqs: Literal["required", "optional", "none"] = "required"
    ssl_ca_certs: Path | None = None
    key_prefix: Annotated[str, Field(pattern=r"^[^{}\s]*$")] = ""
    connection_pool: ConnectionPoolConfig = ConnectionPoolConfig()
    embedded: EmbeddedRedisConfig = EmbeddedRedisConfig()

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            scheme = value.get_secret_value().split("://", 1)[0]
            if scheme not in ("redis", "rediss", "unix"):
                raise ValueError(
                    f"expected a redis://, rediss:// or unix:// URL, got scheme {scheme!r}"
                )
        return value

    @property
    def is_embedded(self) -> bool:
        """Return True when neither a URL nor a host names an external server."""
        return self.url is None and self.host is None


RetryStrategyName = Literal["exponential_backoff", "linear_backoff", "fibonacci_backoff", "fixed"]


class RetryStrategyConfig(Section):
    """The seed's retry settings: attempts, the shape of the wait, its bounds, jitter."""

    max_attempts: PositiveInt = 3
    strategy: RetryStrategyName = "exponential_backoff"
    base_delay: NonNegativeFloat = 1.0
    multiplier: PositiveFloat = 2.0
    max_delay: PositiveFloat = 60.0
    jitter: bool = True

    @model_validator(mode="after")
    def _bounds(self) -> RetryStrategyConfig:
        if self.max_delay < self.base_delay:
            raise ValueError(
                f"max_delay ({self.max_delay}) is below base_delay ({self.base_delay})"
            )
        return self


class AlertThresholds(Section):
    """The seed's alert thresholds; ``response_time`` is in milliseconds as in the seed."""

    error_rate: Annotated[float, Field(ge=0.0, le=1.0)] = 0.1
    response_time: PositiveFloat = 5000.0
    queue_size: PositiveInt = 1000


class AlertsConfig(Section):
    """Alert rules and where alerts go."""

    enabled: bool = True
    thresholds: AlertThresholds = AlertThresholds()
    evaluation_interval: PositiveFloat = 30.0
    repeat_interval: PositiveFloat = 600.0
    webhook_url: SecretStr | None = None


class FlowerConfig(Section):
    """The Flower dashboard that ``crypto-ai up`` starts."""

    enabled: bool = True
    address: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 5555
    basic_auth: SecretStr | None = None


class MonitoringConfig(Section):
    """Alerts, dashboards and logs."""

    alerts: AlertsConfig = AlertsConfig()
    flower: FlowerConfig = FlowerConfig()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    prometheus_port: Annotated[int, Field(ge=0, le=65535)] = 9808
    prometheus_address: str = "127.0.0.1"
    redis_log_max_entries: PositiveInt = 1000


class ConnectionPoolingConfig(Section):
    """HTTP connection pools under ccxt, one per worker process per exchange."""

    enabled: bool = True
    max_connections_per_exchange: PositiveInt = 20
    connection_timeout: PositiveFloat = 10.0
    read_timeout: PositiveFloat = 30.0


class CachingConfig(Section):
    """The shared response cache (Redis, bounded).

    ``enabled: false`` keeps no answers (no PARTIAL fallback from the cache); ``default_ttl``
    is how long an answer is kept when a request does not say; ``lru``: the least recently
    written entry leaves first when ``max_cache_size`` is reached (every fresh answer is
    written again, so entries in use stay).
    """

    enabled: bool = True
    default_ttl: PositiveFloat = 300.0
    max_cache_size: PositiveInt = 10000
    eviction_policy: Literal["lru"] = "lru"


class BatchProcessingConfig(Section):
    """Merging same-kind requests for many symbols into one batched exchange call.

    A batch takes requests for at most ``batch_timeout`` seconds after its first one, and
    closes earlier when it holds ``batch_size`` requests or when none joined for
    ``idle_timeout`` seconds (a burst is over; a lone request does not wait the full window).
    ``watchlist_max_age``: a market snapshot takes its ticker from one batched read of the
    whole watchlist made at most this many seconds ago (0: every snapshot asks anew).
    """

    enabled: bool = True
    batch_size: PositiveInt = 50
    batch_timeout: PositiveFloat = 1.0
    idle_timeout: PositiveFloat = 0.1
    watchlist_max_age: NonNegativeFloat = 10.0


class PerformanceConfig(Section):
    """The seed's performance section."""

    connection_pooling: ConnectionPoolingConfig = ConnectionPoolingConfig()
    caching: CachingConfig = CachingConfig()
    batch_processing: BatchProcessingConfig = BatchProcessingConfig()


class CeleryConfig(Section):
    """Broker-level settings of the fleet.

    ``visibility_timeout`` is how long a message fetched by a worker that then dies stays
    invisible before Redis hands it to another worker. It must exceed every countdown or
    ETA the fleet uses and every task's time limit, or a healthy task gets delivered twice.
    """

    visibility_timeout: PositiveInt = 3600
    unacked_restore_interval: PositiveInt = 10
    max_countdown: NonNegativeInt = 600
    task_time_limit: PositiveInt = 300
    task_soft_time_limit: PositiveInt = 270
    result_expires: PositiveInt = 86400
    worker_concurrency: PositiveInt | None = None
    dedicated_exchanges: list[str] = []
    #: Seconds a stopping fleet gives running tasks (warm shutdown) before it kills workers.
    shutdown_grace_seconds: PositiveFloat = 30.0

    @model_validator(mode="after")
    def _timeouts_consistent(self) -> CeleryConfig:
        longest = max(self.max_countdown, self.task_time_limit)
        if self.visibility_timeout <= longest:
            raise ValueError(
                f"visibility_timeout ({self.visibility_timeout}s) must be longer than the "
                f"longest countdown or task time limit ({longest}s), or tasks run twice"
            )
        if self.task_soft_time_limit >= self.task_time_limit:
            raise ValueError("task_soft_time_limit must be below task_time_limit")
        return self


#: Tasks that claim a time slot per run and so take the schedule's ``every`` as a kwarg.
SLOT_TASKS = frozenset({"analysis.run"})


class ScheduleEntry(Section):
    """One celery beat entry: a task run every N seconds on a queue.

    A slot task (``analysis.run``) gets ``kwargs.every`` from ``every``: write it once.
    """

    task: str
    every: PositiveFloat
    queue: Literal["high", "medium", "low"] | None = None
    kwargs: dict[str, str | int | float | bool] = {}
    enabled: bool = True

    @model_validator(mode="before")
    @classmethod
    def _every_written_once(cls, data: object) -> object:
        if not isinstance(data, dict) or data.get("task") not in SLOT_TASKS:
            return data
        kwargs = data.get("kwargs") or {}
        if not isinstance(kwargs, dict) or "every" not in data:
            return data  # the field validators name what is wrong
        given, every = kwargs.get("every"), data["every"]
        if given is None:
            if isinstance(every, bool) or not isinstance(every, int | float):
                return data  # `every` is checked as a field; the task reads it from the config
            return {**data, "kwargs": {**kwargs, "every": every}}
        if isinstance(given, bool) or not isinstance(given, int | float) or given != every:
            raise ValueError(
                f"kwargs.every ({given!r}) differs from every ({every!r}); "
                "write every alone, the task gets it from there"
            )
        return data


class WatchItem(Section):
    """The symbols the fleet analyses on one configured exchange."""

    exchange: str
    symbols: list[str]

    @field_validator("symbols")
    @classmethod
    def _symbol_format(cls, values: list[str]) -> list[str]:
        return check_symbols(values)


#: How the LLM budget is charged (llm/openai_compatible.py): a call's prompt is estimated at
#: one token per ``CHARS_PER_TOKEN`` characters of its system and user messages, and its
#: answer at ``llm.max_tokens`` (``DEFAULT_ANSWER_TOKENS`` when unset). Neither the response
#: schema nor the chat format's few tokens per message are counted, by the charge or here.
CHARS_PER_TOKEN = 4
DEFAULT_ANSWER_TOKENS = 600
#: Seconds an agent stage that may ask the LLM (news, the cases, the strategy) has before the
#: worker cancels it (tasks/agents.py). One LLM call, its slot and budget waits included,
#: lasts at most ``llm.timeout``; ``LLM_STAGE_RESERVE`` of the stage stays for the rest of it
#: (the stage's reads, the rules rung, saving), so an LLM that times out still falls to the
#: rules inside the stage instead of failing the run.
AGENT_STAGE_SECONDS = 120.0
LLM_STAGE_RESERVE = 30.0
#: The characters of the largest call the agents make, an analyst's case: the filled-in
#: agents/prompts/case.txt (about 680), the features as JSON at full float precision (about
#: 470) and the 20 newest headlines an LLM prompt shows (agents/llm.py, ``MAX_HEADLINES``;
#: about 160 each with a 90-character title, its time and its score), about 4,400 in all.
#: The strategist's call (plan.txt, the features and both cases) is about 2,800; the
#: sentiment call (sentiment.txt and 20 titles) about 2,200. tests/unit/test_llm_ladder.py
#: checks this against the real prompt files.
LARGEST_CALL_CHARS = 4800


class LLMConfig(Section):
    """An OpenAI-compatible LLM. Unset ``api_key`` and ``base_url`` means rule-based agents.

    ``max_tokens`` is the answer's limit sent to the server (unset: the server's own) and
    what each call charges for its answer; ``tokens_per_minute`` must hold at least the
    largest call (:meth:`largest_call_tokens`), or that call could never be admitted.

    ``structured_output`` is how answers are asked for (docs/AGENTS.md, "LLM servers"):
    ``json_schema`` (OpenAI, vLLM, LM Studio, Ollama, llama-server), ``json_object`` with the
    schema (llama-cpp-python, llama-server), ``tool_call`` (one forced function), ``prompt``
    (the schema in the prompt, the answer's JSON parsed from its text); ``auto`` tries them
    in that order and remembers, per server and model, the first one the server does not
    refuse. ``max_concurrency`` caps the calls in flight to the server across the whole
    fleet (a Redis semaphore; 1 for a server that serves one request at a time); waiting for
    a slot counts against ``timeout``.
    """

    model: str = "gpt-4o-mini"
    base_url: str | None = None
    api_key: SecretStr | None = None
    timeout: PositiveFloat = 30.0
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.0
    max_tokens: PositiveInt | None = None
    structured_output: Literal["auto", "json_schema", "json_object", "tool_call", "prompt"] = "auto"
    max_concurrency: PositiveInt | None = None
    requests_per_minute: PositiveInt = 60
    tokens_per_minute: PositiveInt = 90000
    # the real usage the server reports (llm/usage.py): a fleet-wide cap per UTC day, after
    # which the rules answer; prices per 1,000 tokens give each run and day a cost (the
    # completion's price, when set, replaces ``price_per_1k_tokens`` for answer tokens)
    budget_per_day: PositiveInt | None = None
    price_per_1k_tokens: PositiveFloat | None = None
    price_per_1k_completion_tokens: PositiveFloat | None = None

    @property
    def configured(self) -> bool:
        """Return True when an API key or a server URL switches the LLM on."""
        return self.api_key is not None or self.base_url is not None

    def answer_tokens(self) -> int:
        """Return the tokens a call is charged for its answer."""
        return self.max_tokens or DEFAULT_ANSWER_TOKENS

    def largest_call_tokens(self) -> int:
        """Return the tokens the largest call (a case) is charged: prompt, data and answer."""
        return estimated_prompt_tokens(LARGEST_CALL_CHARS) + self.answer_tokens()

    @model_validator(mode="after")
    def _prompt_priced_too(self) -> LLMConfig:
        if self.price_per_1k_completion_tokens and self.price_per_1k_tokens is None:
            raise ValueError(
                "price_per_1k_completion_tokens needs price_per_1k_tokens (the prompt's price)"
            )
        return self


def estimated_prompt_tokens(chars: int) -> int:
    """Return the tokens charged for messages of ``chars`` characters."""
    return chars // CHARS_PER_TOKEN


class NewsAPIConfig(Section):
    """A JSON news API (CryptoPanic-style): where the items are and what their fields are."""

    name: str
    url: str
    token: SecretStr | None = None
    token_param: str = "auth_token"  # noqa: S105 - a parameter name, not a secret
    items_path: str = "results"
    title_field: str = "title"
    published_field: str = "published_at"
    url_field: str = "url"
    requests_per_minute: PositiveInt = 30


class NewsConfig(Section):
    """Where the news agent reads: RSS/Atom feeds, JSON APIs, local files, sandbox feeds."""

    feeds: list[str] = []
    apis: list[NewsAPIConfig] = []
    files: list[Path] = []
    sandbox_feeds: bool = True
    lookback_hours: PositiveFloat = 24.0
    fetch_timeout: PositiveFloat = 10.0
    refresh_seconds: PositiveFloat = 60.0


class ReportsConfig(Section):
    """Where run reports go (JSON and a readable page per symbol), and for how long in Redis."""

    dir: Path = Path(".crypto-ai/reports")
    keep_days: PositiveFloat = 30.0


class TracingConfig(Section):
    """OpenTelemetry tracing: off by default; console, JSON files, or OTLP to a collector.

    With ``otlp`` and no ``otlp_endpoint``, the standard ``OTEL_EXPORTER_OTLP_*`` variables
    apply (e.g. Jaeger's or Tempo's OTLP/HTTP endpoint).
    """

    exporter: Literal["none", "console", "file", "otlp"] = "none"
    dir: Path = Path(".crypto-ai/traces")
    otlp_endpoint: str | None = None
    service_name: str = "crypto-ai"


class RiskLimits(Section):
    """The risk guard's limits, in the quote currency (USDT) unless named otherwise."""

    max_notional_per_order: PositiveFloat = 100.0
    max_position_per_symbol: PositiveFloat = 500.0
    max_daily_loss: PositiveFloat = 200.0
    max_open_orders: PositiveInt = 5
    max_price_deviation: Annotated[float, Field(gt=0.0, le=0.5)] = 0.02


class PaperConfig(Section):
    """The paper wallet of paper mode against a real exchange (docs/POSITIONS.md).

    Paper fills take the book's touch (the ask for a buy, the bid for a sell), moved
    ``slippage_bps`` against the order, and pay ``fee_rate`` of their cost in the quote.
    """

    starting_balances: dict[str, NonNegativeFloat] = {"USDT": 10000.0}
    slippage_bps: Annotated[float, Field(ge=0.0, le=1000.0)] = 5.0
    fee_rate: Annotated[float, Field(ge=0.0, le=0.05)] = 0.001


class ProtectionConfig(Section):
    """The protective exits of open positions (docs/POSITIONS.md, "Protection").

    ``watch_seconds``: how often the fleet watch (``protection.watch`` on ``high``) checks
    the watched positions' stops, take-profits and horizons; ``stop_limit_bps``: how far
    below its stop an exchange-native stop-limit sells; ``list_check_seconds``: how often an
    exchange-protected position's order list is read when the price has not reached a leg.
    """

    enabled: bool = True
    watch_seconds: PositiveFloat = 5.0
    stop_limit_bps: Annotated[float, Field(ge=0.0, le=1000.0)] = 50.0
    list_check_seconds: PositiveFloat = 30.0


class TradingConfig(Section):
    """Paper or live, and the risk limits no decision can pass."""

    mode: Literal["paper", "live"] = "paper"
    risk: RiskLimits = RiskLimits()
    paper: PaperConfig = PaperConfig()
    protection: ProtectionConfig = ProtectionConfig()
    #: A plan may be executed this long after its market data was taken: by default this
    #: share of the analysis schedule's interval (``plan_validity_seconds`` overrides it).
    plan_validity_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    plan_validity_seconds: PositiveFloat | None = None


def _default_schedules() -> dict[str, ScheduleEntry]:
    health = {
        f"health-{queue}": ScheduleEntry(task="health.ping", every=60.0, queue=queue)
        for queue in PRIORITY_QUEUES
    }
    analysis = ScheduleEntry(task="analysis.run", every=300.0, queue="low")
    reconcile = ScheduleEntry(task="reconcile.orders", every=600.0, queue="high")
    alerts = ScheduleEntry(task="monitor.alerts", every=30.0, queue="high")
    protection = ScheduleEntry(task="protection.watch", every=5.0, queue="high")
    return {
        **health,
        "analysis": analysis,
        "reconcile": reconcile,
        "alerts": alerts,
        "protection": protection,
    }


class AppConfig(Section):
    """The whole configuration, validated as one tree."""

    redis: RedisConfig = RedisConfig()
    exchanges: dict[str, ExchangeConfig] = {}
    retry_strategies: dict[str, RetryStrategyConfig] = {"default": RetryStrategyConfig()}
    monitoring: MonitoringConfig = MonitoringConfig()
    performance: PerformanceConfig = PerformanceConfig()
    rate_limiting: RateLimitingConfig = RateLimitingConfig()
    celery: CeleryConfig = CeleryConfig()
    schedules: dict[str, ScheduleEntry] = Field(default_factory=_default_schedules)
    watchlist: list[WatchItem] = []
    llm: LLMConfig = LLMConfig()
    trading: TradingConfig = TradingConfig()
    news: NewsConfig = NewsConfig()
    tracing: TracingConfig = TracingConfig()
    reports: ReportsConfig = ReportsConfig()
    timeframes: list[Literal["1m", "5m", "15m", "30m", "1h", "4h", "1d"]] = ["15m", "1h", "4h"]

    @field_validator("exchanges")
    @classmethod
    def _resolve_aliases(cls, value: dict[str, ExchangeConfig]) -> dict[str, ExchangeConfig]:
        resolved = {}
        for key, exchange in value.items():
            ccxt_id = exchange.ccxt_id or key
            resolved[key] = exchange.model_copy(
                update={"ccxt_id": EXCHANGE_ALIASES.get(ccxt_id, ccxt_id)}
            )
        return resolved

    @model_validator(mode="after")
    def _alerts_every_evaluation_interval(self) -> AppConfig:
        # the default alerts schedule follows monitoring.alerts.evaluation_interval; a
        # `schedules` section written in the file is taken as it is
        if "schedules" not in self.model_fields_set and "alerts" in self.schedules:
            every = self.monitoring.alerts.evaluation_interval
            self.schedules["alerts"] = self.schedules["alerts"].model_copy(update={"every": every})
        if "schedules" not in self.model_fields_set and "protection" in self.schedules:
            every = self.trading.protection.watch_seconds
            entry = self.schedules["protection"]
            self.schedules["protection"] = entry.model_copy(
                update={"every": every, "enabled": self.trading.protection.enabled}
            )
        return self

    def queues(self) -> tuple[str, ...]:
        """Return every queue the fleet uses: the tiers, then each dedicated exchange's."""
        dedicated = self.celery.dedicated_exchanges
        return (*PRIORITY_QUEUES, *(f"{x}.{tier}" for x in dedicated for tier in PRIORITY_QUEUES))

    def request_seconds(self) -> float:
        """Return the longest one exchange request may take (connect plus read timeout)."""
        pooling = self.performance.connection_pooling
        return pooling.connection_timeout + pooling.read_timeout if pooling.enabled else 10.0

    def plan_validity(self) -> float:
        """Return how many seconds a plan stays executable after its data was taken."""
        if self.trading.plan_validity_seconds is not None:
            return self.trading.plan_validity_seconds
        entry = self.schedules.get("analysis")
        every = entry.every if entry is not None else 300.0
        return every * self.trading.plan_validity_fraction

    def watched(self, exchange: str) -> list[str]:
        """Return the watchlist's symbols on one exchange."""
        return [s for item in self.watchlist if item.exchange == exchange for s in item.symbols]


def cross_reference_problems(config: AppConfig) -> list[tuple[str, str]]:
    """Return (field path, message) for every rule that spans sections."""
    problems: list[tuple[str, str]] = []
    for key, exchange in config.exchanges.items():
        if exchange.ccxt_id not in SUPPORTED_EXCHANGES:
            problems.append(
                (
                    f"exchanges.{key}.ccxt_id",
                    f"unknown exchange {exchange.ccxt_id!r}; expected one of: "
                    f"{', '.join(SUPPORTED_EXCHANGES)}",
                )
            )
    for index, name in enumerate(config.celery.dedicated_exchanges):
        if name not in config.exchanges:
            problems.append(
                (f"celery.dedicated_exchanges.{index}", f"{name!r} is not under exchanges")
            )
    for index, item in enumerate(config.watchlist):
        if item.exchange not in config.exchanges:
            problems.append(
                (
                    f"watchlist.{index}.exchange",
                    f"{item.exchange!r} is not under exchanges "
                    f"(configured: {', '.join(config.exchanges) or 'none'})",
                )
            )
    problems += _visibility_problems(config)
    problems += _llm_budget_problems(config)
    problems += _llm_timeout_problems(config)
    problems += _flower_problems(config)
    if config.trading.mode == "live":
        for key, exchange in config.exchanges.items():
            if exchange.enabled and not exchange.has_keys:
                problems.append(
                    (
                        f"exchanges.{key}.api_key",
                        "trading.mode is 'live' but this exchange has no api_key/api_secret "
                        f"(set {key.upper()}_API_KEY and {key.upper()}_API_SECRET)",
                    )
                )
    return problems


def _visibility_problems(config: AppConfig) -> list[tuple[str, str]]:
    """Return the problem of a visibility timeout that a dying worker's order could outlive."""
    problems: list[tuple[str, str]] = []
    celery, request = config.celery, config.request_seconds()
    if celery.visibility_timeout <= celery.task_time_limit + request:
        problems.append(
            (
                "celery.visibility_timeout",
                f"{celery.visibility_timeout}s leaves no room for an order request in flight "
                f"when a worker dies: it must be longer than task_time_limit "
                f"({celery.task_time_limit}s) plus the longest exchange request "
                f"({request:g}s, performance.connection_pooling connect + read timeout)",
            )
        )
    return problems


#: Addresses only this machine can reach: Flower may go without a password there.
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def _flower_problems(config: AppConfig) -> list[tuple[str, str]]:
    """Return the problem of a Flower others can reach without a password."""
    flower = config.monitoring.flower
    if flower.enabled and flower.basic_auth is None and flower.address not in LOOPBACK:
        return [
            (
                "monitoring.flower.basic_auth",
                f"Flower listens on {flower.address}, which other machines can reach: set "
                "user:password (FLOWER_BASIC_AUTH), or keep monitoring.flower.address at "
                "127.0.0.1",
            )
        ]
    return []


def _llm_timeout_problems(config: AppConfig) -> list[tuple[str, str]]:
    """Return the problem of an LLM timeout longer than an agent stage can wait for it."""
    problems: list[tuple[str, str]] = []
    if config.llm.configured and config.llm.timeout > AGENT_STAGE_SECONDS - LLM_STAGE_RESERVE:
        problems.append(
            (
                "llm.timeout",
                f"{config.llm.timeout:g}s is longer than an agent stage can wait for the LLM "
                f"({AGENT_STAGE_SECONDS - LLM_STAGE_RESERVE:g}s of its {AGENT_STAGE_SECONDS:g}s): "
                "a call that slow would fail the stage instead of falling to the rules; set "
                "llm.max_tokens to bound the answer, or use a faster model",
            )
        )
    return problems


def _llm_budget_problems(config: AppConfig) -> list[tuple[str, str]]:
    """Return the problem of an LLM token budget that the largest call cannot fit."""
    llm = config.llm
    if not llm.configured or llm.tokens_per_minute >= llm.largest_call_tokens():
        return []
    source = " (llm.max_tokens)" if llm.max_tokens else ""
    return [
        (
            "llm.tokens_per_minute",
            f"{llm.tokens_per_minute} is smaller than one prompt (about "
            f"{llm.largest_call_tokens():,} tokens: the case prompt plus its data and max "
            f"answer of {llm.answer_tokens():,} tokens{source}); a call that big is never "
            "admitted, so it always falls back to rules",
        )
    ]
