"""Secrets never reach log output or the Redis log copy."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import fakeredis

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
