"""The Celery settings the fleet derives from its configuration."""

from __future__ import annotations

import ssl

import celeryconfig
from core.config import AppConfig, CeleryConfig, RedisConfig, ScheduleEntry
from tasks.routing import TierRouter, queue_for


def test_reliability_settings() -> None:
    settings = celeryconfig.celery_settings(AppConfig(), "redis://h:1/0")
    assert settings["task_acks_late"] is True
    assert settings["task_reject_on_worker_lost"] is True
    assert settings["worker_prefetch_multiplier"] == 1
    assert settings["task_serializer"] == "json"
    assert settings["accept_content"] == ["json"]
    assert [q.name for q in settings["task_queues"]] == ["high", "medium", "low"]
    assert settings["task_default_queue"] == "medium"


def test_visibility_timeout_is_the_same_for_broker_and_results() -> None:
    config = AppConfig(
        redis=RedisConfig(key_prefix="fleet1:"), celery=CeleryConfig(visibility_timeout=7200)
    )
    settings = celeryconfig.celery_settings(config, "redis://h:1/0")
    broker = settings["broker_transport_options"]
    backend = settings["result_backend_transport_options"]
    assert broker["queue_order_strategy"] == "priority"
    assert broker["visibility_timeout"] == backend["visibility_timeout"] == 7200
    assert broker["global_keyprefix"] == backend["global_keyprefix"] == "fleet1:"


def test_tls_broker_gets_certificate_checks() -> None:
    settings = celeryconfig.celery_settings(AppConfig(), "rediss://h:1/0")
    assert settings["broker_use_ssl"]["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert settings["redis_backend_use_ssl"]["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert "broker_use_ssl" not in celeryconfig.celery_settings(AppConfig(), "redis://h:1/0")


def test_beat_schedule_from_config_expires_missed_runs() -> None:
    config = AppConfig(
        schedules={
            "ping": ScheduleEntry(task="health.ping", every=15, queue="high"),
            "off": ScheduleEntry(task="health.ping", every=15, enabled=False),
        }
    )
    schedule = celeryconfig.beat_schedule(config)
    assert list(schedule) == ["ping"]
    assert schedule["ping"]["schedule"] == 15
    assert schedule["ping"]["options"] == {"expires": 15, "queue": "high"}


def test_tasks_route_to_their_tier() -> None:
    assert queue_for("execution.execute") == "high"
    assert queue_for("reconcile.orders") == "high"
    assert queue_for("analysis.long") == "medium"
    assert queue_for("news.collect") == "low"
    assert TierRouter()("market.snapshot", (), {}, {}) == {"queue": "low"}
    assert TierRouter()("health.ping", (), {}, {}) is None


def test_the_fleet_starts_a_sandbox_only_for_local_base_urls() -> None:
    from pathlib import Path

    from core.config import ExchangeConfig
    from workers.fleet import fleet_specs, sandbox_port

    config = AppConfig(
        exchanges={
            "binance": ExchangeConfig(base_url="http://127.0.0.1:8901"),
            "binance_live": ExchangeConfig(ccxt_id="binance", base_url="https://api.binance.com"),
        }
    )
    names = [spec.name for spec in fleet_specs(config, Path(".crypto-ai"))]
    assert "sandbox-binance" in names and "sandbox-binance_live" not in names
    assert names.count("beat") == 1
    assert sandbox_port("http://localhost:9000") == 9000
    assert sandbox_port("https://api.binance.com") is None


def test_a_dedicated_exchange_gets_its_own_queues() -> None:
    from pathlib import Path

    from core.config import ExchangeConfig
    from tasks.routing import TierRouter
    from workers.fleet import fleet_specs

    router = TierRouter(["binance"])
    assert router("execution.execute", (), {"exchange": "binance"}, {}) == {"queue": "binance.high"}
    assert router("news.collect", (), {"exchange": "okx"}, {}) == {"queue": "low"}
    assert router("health.ping", (), {}, {}) is None
    config = AppConfig(
        exchanges={"binance": ExchangeConfig()},
        celery=CeleryConfig(dedicated_exchanges=["binance"]),
    )
    argv = next(s.argv for s in fleet_specs(config, Path(".")) if s.name == "worker-binance")
    assert "binance.high,binance.medium,binance.low" in argv


def test_is_sandbox_false_on_a_local_url_starts_no_sandbox() -> None:
    from pathlib import Path

    from core.config import ExchangeConfig
    from workers.fleet import fleet_specs

    config = AppConfig(
        exchanges={"binance": ExchangeConfig(base_url="http://127.0.0.1:8901", is_sandbox=False)}
    )
    names = [spec.name for spec in fleet_specs(config, Path(".crypto-ai"))]
    assert not [n for n in names if n.startswith("sandbox-")]
