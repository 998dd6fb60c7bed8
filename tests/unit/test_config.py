"""Configuration: the seed's schema loads, the environment overrides it, bad input is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import AppConfig
from core.config_loader import load_config
from core.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]

SEED_EXAMPLE = """
redis:
  host: "localhost"
  port: 6379
  db: 0
  connection_pool:
    max_connections: 50
    retry_on_timeout: true
exchanges:
  binance:
    name: "Binance"
    base_url: "https://api.binance.com"
    rate_limits:
      - type: "token_bucket"
        capacity: 6000
        rate: 100
        window: 60
    circuit_breaker:
      failure_threshold: 5
      recovery_timeout: 60
retry_strategies:
  default:
    max_attempts: 3
    strategy: "exponential_backoff"
    base_delay: 1.0
    max_delay: 60.0
    jitter: true
monitoring:
  alerts:
    enabled: true
    thresholds:
      error_rate: 0.1
      response_time: 5000
      queue_size: 1000
performance:
  connection_pooling:
    enabled: true
    max_connections_per_exchange: 20
    connection_timeout: 10
    read_timeout: 30
  caching:
    enabled: true
    default_ttl: 300
    max_cache_size: 10000
    eviction_policy: "lru"
  batch_processing:
    enabled: true
    batch_size: 50
    batch_timeout: 1.0
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def problems_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env=env or {})
    return str(info.value)


def test_the_seed_readme_example_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, SEED_EXAMPLE), env={})
    binance = config.exchanges["binance"]
    assert binance.ccxt_id == "binance"
    assert binance.rate_limits[0].capacity == 6000
    assert config.redis.host == "localhost"
    assert config.monitoring.alerts.thresholds.response_time == 5000
    assert config.performance.caching.max_cache_size == 10000


def test_the_shipped_config_yaml_is_valid() -> None:
    config = load_config(REPO_ROOT / "config.yaml", env={})
    assert config.trading.mode == "paper"
    assert config.redis.is_embedded


def test_no_file_means_defaults_with_embedded_redis_and_paper_trading(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""), env={})
    assert config == AppConfig()
    assert config.redis.is_embedded
    assert config.trading.mode == "paper"
    assert not config.llm.configured


def test_seed_environment_variables_override_the_file(tmp_path: Path) -> None:
    env = {
        "REDIS_HOST": "redis.internal",
        "REDIS_PORT": "6380",
        "REDIS_PASSWORD": "s3cret",
        "BINANCE_API_KEY": "key-abc",
        "BINANCE_API_SECRET": "secret-xyz",
        "OPENAI_API_KEY": "sk-test",
    }
    config = load_config(write(tmp_path, SEED_EXAMPLE), env=env)
    assert config.redis.host == "redis.internal"
    assert config.redis.port == 6380
    assert config.redis.password is not None
    assert config.redis.password.get_secret_value() == "s3cret"
    binance = config.exchanges["binance"]
    assert binance.api_key is not None and binance.api_key.get_secret_value() == "key-abc"
    assert binance.has_keys
    assert config.llm.configured


def test_redis_url_and_nested_overrides_from_the_environment(tmp_path: Path) -> None:
    env = {
        "REDIS_URL": "rediss://:pw@cache.example:6379/2",
        "CRYPTO_AI__CELERY__VISIBILITY_TIMEOUT": "7200",
        "CRYPTO_AI__PERFORMANCE__CACHING__ENABLED": "false",
    }
    config = load_config(write(tmp_path, SEED_EXAMPLE), env=env)
    assert config.redis.url is not None
    assert config.redis.url.get_secret_value().startswith("rediss://")
    assert config.celery.visibility_timeout == 7200
    assert config.performance.caching.enabled is False


def test_config_file_from_crypto_ai_config_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "trading: {mode: paper}\nwatchlist: []\n")
    config = load_config(env={"CRYPTO_AI_CONFIG": str(path)})
    assert config.watchlist == []


def test_secrets_never_print(tmp_path: Path) -> None:
    env = {
        "BINANCE_API_SECRET": "secret-xyz",
        "BINANCE_API_KEY": "key-abc",
        "REDIS_URL": "redis://:hunter2@h:1/0",
        "OPENAI_API_KEY": "sk-live-123",
    }
    config = load_config(write(tmp_path, SEED_EXAMPLE), env=env)
    for text in (str(config), repr(config), config.model_dump_json()):
        for secret in ("secret-xyz", "key-abc", "hunter2", "sk-live-123"):
            assert secret not in text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "exchanges:\n  binance:\n    rate_limits:\n      - {type: token_bucket, capacity: 10, rate: -5}\n",
            "exchanges.binance.rate_limits.0.rate: Input should be greater than 0 (got -5)",
        ),
        (
            "exchanges:\n  binance:\n    rate_limits:\n      - {type: moving_average, limit: 5}\n",
            "exchanges.binance.rate_limits.0.type: Input should be 'token_bucket', "
            "'sliding_window', 'leaky_bucket' or 'fixed_window' (got 'moving_average')",
        ),
        (
            "exchanges:\n  binance:\n    rate_limits:\n      - {type: leaky_bucket, capacity: 5}\n",
            "exchanges.binance.rate_limits.0: a leaky_bucket limit needs leak_rate",
        ),
        (
            "exchanges:\n  binance:\n    circuit_breaker: {failure_treshold: 3}\n",
            "exchanges.binance.circuit_breaker.failure_treshold: unknown key; expected one of: "
            "failure_threshold, recovery_timeout",
        ),
        (
            "exchanges:\n  mtgox: {}\n",
            "exchanges.mtgox.ccxt_id: unknown exchange 'mtgox'; expected one of: "
            "binance, coinbase, kraken, htx, okx",
        ),
        (
            "exchanges:\n  binance: {}\nwatchlist:\n  - {exchange: kraken, symbols: [BTC/USD]}\n",
            "watchlist.0.exchange: 'kraken' is not under exchanges (configured: binance)",
        ),
        (
            "exchanges:\n  binance: {}\nwatchlist:\n  - {exchange: binance, symbols: [btcusdt]}\n",
            "watchlist.0.symbols: expected symbols like 'BTC/USDT', got 'btcusdt'",
        ),
        ("redis: {port: 70000}\n", "redis.port: Input should be less than or equal to 65535"),
        (
            "redis: {url: 'http://localhost:6379'}\n",
            "redis.url: expected a redis://, rediss:// or unix:// URL, got scheme 'http'",
        ),
        (
            "celery: {visibility_timeout: 60, task_time_limit: 300}\n",
            "celery: visibility_timeout (60s) must be longer than the longest countdown or "
            "task time limit (600s)",
        ),
        (
            "retry_strategies:\n  default: {strategy: random_backoff}\n",
            "retry_strategies.default.strategy: Input should be",
        ),
        (
            "retry_strategies:\n  default: {base_delay: 10, max_delay: 5}\n",
            "retry_strategies.default: max_delay (5.0) is below base_delay (10.0)",
        ),
        (
            "monitoring: {alerts: {thresholds: {error_rate: 1.5}}}\n",
            "monitoring.alerts.thresholds.error_rate: Input should be less than or equal to 1",
        ),
        ("tradnig: {mode: live}\n", "tradnig: unknown key; expected one of: celery, exchanges"),
        (
            "exchanges:\n  binance: {}\ntrading: {mode: live}\n",
            "exchanges.binance.api_key: trading.mode is 'live' but this exchange has no "
            "api_key/api_secret (set BINANCE_API_KEY and BINANCE_API_SECRET)",
        ),
        (
            "exchanges:\n  binance: {base_url: 'api.binance.com'}\n",
            "exchanges.binance.base_url: expected an http:// or https:// URL",
        ),
    ],
)
def test_bad_config_is_named_by_file_field_and_expectation(
    tmp_path: Path, text: str, expected: str
) -> None:
    message = problems_of(tmp_path, text)
    assert message.startswith(f"invalid configuration in {tmp_path / 'config.yaml'}")
    assert expected in message


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    message = problems_of(tmp_path, "redis: {port: 0, db: -1}\ncelery: {result_expires: 0}\n")
    assert "(3 problems)" in message
    assert "redis.port" in message and "redis.db" in message and "celery.result_expires" in message


def test_broken_yaml_names_line_and_column(tmp_path: Path) -> None:
    message = problems_of(tmp_path, "redis:\n  host: [localhost\n")
    assert "not valid YAML: line 3, column 1" in message


def test_a_list_at_the_top_is_rejected(tmp_path: Path) -> None:
    assert "expected a mapping of sections, got list" in problems_of(tmp_path, "- a\n- b\n")


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nowhere.yaml: <root>: file not found"):
        load_config(tmp_path / "nowhere.yaml", env={})


def test_a_bad_environment_variable_is_named(tmp_path: Path) -> None:
    message = problems_of(tmp_path, "", env={"REDIS_PORT": "six"})
    assert "redis.port: Input should be a valid integer" in message
    assert "(from environment variable REDIS_PORT)" in message


def test_a_bad_secret_is_reported_without_echoing_it(tmp_path: Path) -> None:
    message = problems_of(tmp_path, "", env={"REDIS_URL": "http://user:topsecret@h:1"})
    assert "redis.url" in message
    assert "topsecret" not in message


def test_exchange_aliases_from_the_seed_resolve_to_current_ccxt_ids(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "exchanges:\n  huobi: {}\n  okex: {}\n"), env={})
    assert config.exchanges["huobi"].ccxt_id == "htx"
    assert config.exchanges["okex"].ccxt_id == "okx"


def test_the_alerts_schedule_follows_the_evaluation_interval() -> None:
    config = AppConfig.model_validate({"monitoring": {"alerts": {"evaluation_interval": 12}}})
    assert config.schedules["alerts"].every == 12
    assert AppConfig().schedules["alerts"].every == 30
    written = AppConfig.model_validate(
        {
            "monitoring": {"alerts": {"evaluation_interval": 12}},
            "schedules": {"alerts": {"task": "monitor.alerts", "every": 45, "queue": "high"}},
        }
    )
    assert written.schedules["alerts"].every == 45  # a schedules section is taken as written


def test_the_fleet_queues_include_each_dedicated_exchanges_tiers() -> None:
    assert AppConfig().queues() == ("high", "medium", "low")
    config = AppConfig.model_validate({"celery": {"dedicated_exchanges": ["binance"]}})
    assert config.queues() == (
        "high",
        "medium",
        "low",
        "binance.high",
        "binance.medium",
        "binance.low",
    )


def test_visibility_timeout_must_leave_room_for_an_order_request_after_the_time_limit() -> None:
    from core.config import AppConfig, CeleryConfig, cross_reference_problems

    # 300 s time limit + 40 s (10 s connect + 30 s read) request: 320 s is not enough
    tight = AppConfig(
        celery=CeleryConfig(visibility_timeout=320, max_countdown=0, task_time_limit=300)
    )
    problems = dict(cross_reference_problems(tight))
    assert "celery.visibility_timeout" in problems
    assert "task_time_limit (300s)" in problems["celery.visibility_timeout"]
    roomy = AppConfig(
        celery=CeleryConfig(visibility_timeout=341, max_countdown=0, task_time_limit=300)
    )
    assert "celery.visibility_timeout" not in dict(cross_reference_problems(roomy))


def test_an_llm_budget_smaller_than_one_prompt_is_refused(tmp_path: Path) -> None:
    llm = "llm:\n  base_url: http://127.0.0.1:9/v1\n"
    message = problems_of(tmp_path, llm + "  tokens_per_minute: 500\n")
    assert "llm.tokens_per_minute: 500 is smaller than one prompt (about 1,800 tokens" in message
    assert "max answer" in message
    assert "llm.tokens_per_minute: 1799" in problems_of(
        tmp_path, llm + "  tokens_per_minute: 1799\n"
    )
    assert load_config(write(tmp_path, llm + "  tokens_per_minute: 1800\n"), env={})
    # a configured max_tokens is what an answer is charged, so it moves the floor
    roomy = llm + "  tokens_per_minute: 1800\n  max_tokens: 2000\n"
    assert "about 3,200 tokens" in problems_of(tmp_path, roomy)
    # the environment's values are checked too
    env_message = problems_of(
        tmp_path,
        "{}\n",
        env={"OPENAI_API_KEY": "sk-test", "CRYPTO_AI__LLM__TOKENS_PER_MINUTE": "99"},
    )
    assert "llm.tokens_per_minute: 99 is smaller than one prompt" in env_message
    # without an LLM the budget is never spent: nothing to refuse
    assert load_config(write(tmp_path, "llm:\n  tokens_per_minute: 500\n"), env={})


def test_an_llm_timeout_an_agent_stage_cannot_wait_out_is_refused_in_one_line() -> None:
    from core.config import AGENT_STAGE_SECONDS, LLM_STAGE_RESERVE, cross_reference_problems

    slow = AppConfig.model_validate({"llm": {"base_url": "http://127.0.0.1:1", "timeout": 300}})
    problems = dict(cross_reference_problems(slow))
    assert "300s is longer than an agent stage can wait" in problems["llm.timeout"]
    fits = AGENT_STAGE_SECONDS - LLM_STAGE_RESERVE
    ok = AppConfig.model_validate({"llm": {"base_url": "http://127.0.0.1:1", "timeout": fits}})
    assert "llm.timeout" not in dict(cross_reference_problems(ok))
    # no LLM configured: its timeout is never used
    assert "llm.timeout" not in dict(cross_reference_problems(AppConfig(llm={"timeout": 300})))


def test_a_flower_other_machines_can_reach_needs_a_password() -> None:
    from core.config import cross_reference_problems

    open_flower = AppConfig.model_validate({"monitoring": {"flower": {"address": "0.0.0.0"}}})
    problems = dict(cross_reference_problems(open_flower))
    assert "0.0.0.0, which other machines can reach" in problems["monitoring.flower.basic_auth"]
    guarded = AppConfig.model_validate(
        {"monitoring": {"flower": {"address": "0.0.0.0", "basic_auth": "ops:s3cret"}}}
    )
    assert "monitoring.flower.basic_auth" not in dict(cross_reference_problems(guarded))
    assert "monitoring.flower.basic_auth" not in dict(cross_reference_problems(AppConfig()))
