"""Which Redis a configuration names, and how its URL is shown."""

from __future__ import annotations

from core.config import RedisConfig
from core.redis_target import external_redis_url, redact_url


def test_no_url_and_no_host_means_embedded() -> None:
    assert external_redis_url(RedisConfig()) is None


def test_host_port_db_and_an_escaped_password_make_a_url() -> None:
    config = RedisConfig(host="redis.internal", port=6380, db=3, password="p@ss/word")
    assert external_redis_url(config) == "redis://:p%40ss%2Fword@redis.internal:6380/3"


def test_tls_and_acl_user() -> None:
    config = RedisConfig(host="cache", ssl=True, username="fleet", password="pw")
    assert external_redis_url(config) == "rediss://fleet:pw@cache:6379/0"


def test_an_explicit_url_wins_over_host() -> None:
    config = RedisConfig(url="redis://other:1/0", host="ignored")
    assert external_redis_url(config) == "redis://other:1/0"


def test_redact_hides_passwords_only() -> None:
    assert redact_url("redis://:pw@h:1/0") == "redis://:***@h:1/0"
    assert redact_url("rediss://user:pw@h:1/0") == "rediss://user:***@h:1/0"
    assert redact_url("redis://h:1/0") == "redis://h:1/0"
