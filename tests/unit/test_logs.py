"""Secrets never reach log output or the Redis log copy."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import fakeredis
import pytest

from core.config_loader import load_config
from monitoring.logs import install, secrets_of


def test_secrets_are_redacted_in_every_handler_and_the_redis_copy(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("exchanges:\n  binance: {}\n")
    env = {
        "BINANCE_API_KEY": "key-AAAA1111",
        "BINANCE_API_SECRET": "sec-BBBB2222",
        "REDIS_URL": "redis://:pw-CCCC3333@h:1/0",
        "OPENAI_API_KEY": "sk-DDDD4444",
    }
    config = load_config(tmp_path / "c.yaml", env=env)
    assert {"key-AAAA1111", "sec-BBBB2222", "pw-CCCC3333", "sk-DDDD4444"} <= set(secrets_of(config))
    logger = logging.getLogger("test.redaction")
    logger.propagate = False
    stream = io.StringIO()
    logger.addHandler(logging.StreamHandler(stream))
    logger.setLevel(logging.INFO)
    client = fakeredis.FakeRedis()
    install(logger, config, client, "logs:system")
    logger.info(
        "signing with %s and %s for %s",
        "key-AAAA1111",
        "sec-BBBB2222",
        "redis://:pw-CCCC3333@h:1/0",
    )
    try:
        raise RuntimeError("openai said no to sk-DDDD4444")
    except RuntimeError:
        logger.exception("call failed")
    from opentelemetry.sdk.trace import TracerProvider

    with TracerProvider().get_tracer("test").start_as_current_span("work") as span:
        logger.info("inside a span")
        trace_id = f"{span.get_span_context().trace_id:032x}"
    assert f"inside a span [trace={trace_id} span=" in stream.getvalue()
    stored = [json.loads(x) for x in client.lrange("logs:system", 0, -1)]
    assert stored[0]["trace_id"] == trace_id
    stored = stored[1:]
    text = stream.getvalue() + json.dumps(stored)
    for secret in ("key-AAAA1111", "sec-BBBB2222", "pw-CCCC3333", "sk-DDDD4444"):
        assert secret not in text
    assert "signing with *** and ***" in stream.getvalue()
    assert stored[0]["message"] == "call failed" and "***" in stored[0]["exception"]
    assert len(stored) == 2


def _dropped_total() -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("crypto_ai_log_records_dropped_total") or 0.0


def test_the_redis_copy_keeps_records_while_redis_is_away_and_sends_them_when_it_is_back(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    import redis

    from monitoring.logs import RedisLogHandler
    from workers.redis_server import EmbeddedRedis

    server = EmbeddedRedis(tmp_path / "redis", appendonly=False)
    logger = logging.getLogger("test.redis-away")
    logger.propagate, logger.level = False, logging.INFO
    before = _dropped_total()
    try:
        url = server.start()
        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        handler = RedisLogHandler(client, "logs:system", 100, buffer_size=3, retry_interval=0.0)
        logger.addHandler(handler)
        logger.info("before the outage")
        server.stop()
        for n in range(5):
            logger.info("during the outage %d", n)
        assert handler.dropped == 2 and _dropped_total() - before == 2
        server = EmbeddedRedis(tmp_path / "redis", port=server.port, appendonly=False)
        server.start()
        logger.info("after the outage")
        stored = [json.loads(x)["message"] for x in client.lrange("logs:system", 0, -1)]
    finally:
        logger.handlers.clear()
        server.stop()
    assert stored == [
        "after the outage",
        "during the outage 4",
        "during the outage 3",
        "during the outage 2",
    ]  # the server restarted empty; the two oldest of the outage were dropped
    err = capfd.readouterr().err
    assert "Logging error" not in err and "Traceback" not in err
    warnings = [line for line in err.splitlines() if "Redis log copy" in line]
    assert len(warnings) == 2, err
    assert "dropping the oldest" in warnings[0] and "2 dropped" in warnings[1]


def test_the_redis_copy_waits_between_attempts_while_redis_is_away() -> None:
    from monitoring.logs import RedisLogHandler

    now = [0.0]
    attempts = []

    class Down:
        def pipeline(self, transaction: bool = False) -> Down:
            attempts.append(now[0])
            return self

        def lpush(self, *_: object) -> None:
            return None

        def ltrim(self, *_: object) -> None:
            return None

        def execute(self) -> None:
            import redis

            raise redis.ConnectionError("refused")

    handler = RedisLogHandler(Down(), "k", 10, retry_interval=5.0, clock=lambda: now[0])  # type: ignore[arg-type]
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "m", None, None)
    for t in (0.0, 1.0, 4.9, 5.0, 6.0):
        now[0] = t
        handler.emit(record)
    assert attempts == [0.0, 5.0] and len(handler.pending) == 5
