"""The seed's README examples, exactly as it prints them, against a running fleet.

The seed is the README of github.com/cys813/crypto-ai-trading-system (its first layout,
``crypto_ai_trading/`` with ``advanced_rate_limiting.py``, ``priority_queue_manager.py`` and
``fallback_retry_system.py`` at the top). ``SEED_EXAMPLES`` holds its Python examples
character for character (sections 使用示例, 重试策略, 降级配置, 系统状态监控). Our README's
"Python API" section must show them unchanged, and a fresh Python process runs them one after
another the way a user pastes them into an asyncio REPL: top-level ``await``, one shared
namespace, ``redis_client`` defined beforehand (the seed never shows where it comes from),
in the directory whose ``config.yaml`` the fleet's workers use. The workers consume only the
``high`` queue, so the seed's high-priority submissions must land there to be answered, and
the only exchange is the sandbox, over HTTP.

Run as ``python -m tests.integration.test_seed_examples KIND OUT.json`` this module is that
user process (KIND is ``asyncio`` or ``sync``: the kind of ``redis_client``).
"""

# ruff: noqa: RUF001 - the seed's examples are kept verbatim, full-width punctuation included

from __future__ import annotations

import ast
import asyncio
import builtins
import inspect
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
import yaml

from tests.integration.sandbox_fixtures import admin, running_sandbox
from tests.integration.workers import REPO_ROOT, worker_fleet

pytestmark = pytest.mark.integration

#: The seed README's Python examples, verbatim and in its order.
SEED_EXAMPLES: dict[str, str] = {
    "basic_api_call": """from main import MultiExchangeTradingSystem

# 创建系统实例
system = MultiExchangeTradingSystem("config.yaml")
await system.start()

# 提交交易请求
task_id = await system.submit_trading_request(
    exchange="binance",
    endpoint="/api/v3/ticker/price",
    params={"symbol": "BTCUSDT"},
    priority="high"
)
""",
    "rate_limiting": """from advanced_rate_limiting import ExchangeRateLimitManager

# 创建限流管理器
rate_manager = ExchangeRateLimitManager(redis_client)

# 检查请求限流
result = await rate_manager.check_request("binance", "public")
if result.allowed:
    # 执行API调用
    pass
else:
    print(f"被限流，重试时间: {result.retry_after}秒")
""",
    "priority_queue": """from priority_queue_manager import PriorityQueueManager, Priority

# 创建队列管理器
queue_manager = PriorityQueueManager(redis_client)
await queue_manager.start()

# 提交高优先级任务
task_id = await queue_manager.submit_task(
    priority=Priority.HIGH,
    payload={"action": "urgent_trading"},
    callback=lambda result, error: print(f"结果: {result}")
)
""",
    "fallback": """from fallback_retry_system import FallbackConfig, ResilientAPIClient

# 配置降级策略
fallback_config = FallbackConfig(
    level="partial",
    timeout=10.0,
    cache_enabled=True,
    alternative_endpoints=["https://backup-api.example.com"]
)

# 创建弹性客户端
client = ResilientAPIClient(redis_client)

# 执行弹性请求
result = await client.resilient_request(
    exchange="binance",
    endpoint="/api/v3/ticker/price",
    fallback_config=fallback_config
)
""",
    "retry_exponential": """retry_config = RetryConfig(
    max_attempts=5,
    strategy=RetryStrategy.EXPONENTIAL_BACKOFF,
    base_delay=1.0,
    multiplier=2.0,
    max_delay=60.0,
    jitter=True
)
""",
    "retry_linear": """retry_config = RetryConfig(
    max_attempts=3,
    strategy=RetryStrategy.LINEAR_BACKOFF,
    base_delay=2.0
)
""",
    "retry_fibonacci": """retry_config = RetryConfig(
    max_attempts=5,
    strategy=RetryStrategy.FIBONACCI_BACKOFF,
    base_delay=1.0
)
""",
    "fallback_config": """fallback_config = FallbackConfig(
    level=FallbackLevel.PARTIAL,
    timeout=10.0,
    cache_enabled=True,
    cache_ttl=300,
    alternative_endpoints=[
        "https://backup-api.example.com"
    ],
    fallback_function=lambda error, *args, **kwargs: {
        "status": "degraded",
        "data": None
    }
)
""",
    "system_status": """# 获取系统状态
status = await system.get_system_status()

# 查看队列统计
queue_stats = status['queue_stats']
print(f"高优先级队列: {queue_stats['priority']}")

# 查看熔断器状态
circuit_breakers = status['circuit_breakers']
for name, breaker in circuit_breakers['breakers'].items():
    print(f"{name}: {breaker['state']}")
""",
}

# The retry and fallback-config examples use these names without showing an import; the
# seed's fallback_retry_system module defines them.
PRELUDE = "from fallback_retry_system import FallbackLevel, RetryConfig, RetryStrategy\n"

#: How ``redis_client`` is made: the seed's code is all ``await`` (asyncio), its main.py
#: passes a ``redis.Redis``.
CLIENTS = {
    "asyncio": "import os\nimport redis.asyncio\n\n"
    "redis_client = redis.asyncio.Redis.from_url(os.environ['REDIS_URL'])\n",
    "sync": "import os\nimport redis\n\nredis_client = redis.Redis.from_url(os.environ['REDIS_URL'])\n",
}

Namespace = dict[str, Any]

#: Weight the test spends in the fleet's Binance pool before the examples run.
PRE_SPENT = 1000


async def _run(source: str, namespace: Namespace, name: str) -> None:
    """Run ``source`` as an asyncio REPL would: top-level ``await`` allowed."""
    code = compile(source, f"<seed example {name}>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    outcome = eval(code, namespace)  # the seed's examples are what this test runs
    if inspect.iscoroutine(outcome):
        await outcome


async def _wait_for_line(printed: list[str], prefix: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in printed:
            if line.startswith(prefix):
                return line
        await asyncio.sleep(0.05)
    raise TimeoutError(f"nothing printed starting with {prefix!r}; printed: {printed}")


async def _basic(ns: Namespace, printed: list[str]) -> Any:
    answer = await asyncio.to_thread(ns["system"].app.AsyncResult(ns["task_id"]).get, timeout=60)
    return {"source": answer["source"], "price": answer["data"]["price"]}


async def _rate(ns: Namespace, printed: list[str]) -> Any:
    result = ns["result"]
    return {"allowed": result.allowed, "remaining": result.remaining}


async def _queue(ns: Namespace, printed: list[str]) -> Any:
    line = await _wait_for_line(printed, "结果:")
    task = ns["queue_manager"].app.AsyncResult(ns["task_id"])
    return {"callback": line, "state": task.state, "error": str(task.result)}


async def _fallback(ns: Namespace, printed: list[str]) -> Any:
    answer = ns["result"]
    return {
        "source": answer.source,
        "level": answer.level.name,
        "symbols": sorted(row["symbol"] for row in answer.data),
    }


async def _retry(ns: Namespace, printed: list[str]) -> Any:
    rc = ns["retry_config"]
    return [rc.strategy.name, rc.max_attempts, rc.base_delay, rc.multiplier, rc.max_delay]


async def _fallback_config(ns: Namespace, printed: list[str]) -> Any:
    fc = ns["fallback_config"]
    degraded = fc.fallback_function(RuntimeError("down"), "binance", "/api/v3/ticker/price", {})
    return {"level": fc.level.name, "cache_ttl": fc.cache_ttl, "degraded": degraded}


async def _status(ns: Namespace, printed: list[str]) -> Any:
    return {"queues": sorted(ns["queue_stats"]["priority"])}


OBSERVE: dict[str, Callable[[Namespace, list[str]], Awaitable[Any]]] = {
    "basic_api_call": _basic,
    "rate_limiting": _rate,
    "priority_queue": _queue,
    "fallback": _fallback,
    "retry_exponential": _retry,
    "retry_linear": _retry,
    "retry_fibonacci": _retry,
    "fallback_config": _fallback_config,
    "system_status": _status,
}


async def run_examples(kind: str) -> dict[str, Any]:
    """Run every seed example in one namespace; return what each one produced."""
    printed: list[str] = []

    def seed_print(*args: Any, **kwargs: Any) -> None:  # the examples' print, kept for the test
        printed.append(" ".join(str(a) for a in args))
        builtins.print(*args, **kwargs, flush=True)

    ns: Namespace = {"__name__": "__seed__", "print": seed_print}
    await _run(PRELUDE + CLIENTS[kind], ns, "prelude")
    seen: dict[str, Any] = {}
    try:
        for name, source in SEED_EXAMPLES.items():
            await _run(source, ns, name)
            seen[name] = await OBSERVE[name](ns, printed)
    finally:
        if "queue_manager" in ns:
            await ns["queue_manager"].stop()
        if "client" in ns:
            await ns["client"].close()
        if kind == "asyncio":
            await ns["redis_client"].aclose()
    seen["printed"] = printed
    return seen


def readme_python_api() -> str:
    """Return the README's "Python API" section."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## Python API.*?(?=^## )", text, flags=re.M | re.S)
    assert match, "README.md has no '## Python API' section"
    return match.group(0)


def test_the_readme_shows_each_seed_example_unchanged() -> None:
    blocks = re.findall(r"^```python\n(.*?)^```", readme_python_api(), flags=re.M | re.S)
    for name, source in SEED_EXAMPLES.items():
        assert source in blocks, f"README's Python API lacks the seed's {name} example verbatim"
    for module in ("advanced_rate_limiting", "priority_queue_manager", "fallback_retry_system"):
        assert re.search(rf"^\| `{module}` \|", readme_python_api(), flags=re.M), module


@pytest.mark.timeout(240)
@pytest.mark.parametrize("kind", ["asyncio", "sync"])
def test_the_seed_examples_run_as_written_against_a_fleet(
    kind: str, redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    from core.config import AppConfig, ExchangeConfig
    from ratelimit.manager import ExchangeRateLimitManager

    out = tmp_path / "seen.json"
    with running_sandbox() as sb, worker_fleet(redis_url, namespace, tmp_path) as fleet:
        # the workers' config; the examples find it as ./config.yaml (no $CRYPTO_AI_CONFIG)
        (tmp_path / "config.yaml").write_text(
            yaml.safe_dump({"exchanges": {"binance": {"base_url": sb.url}}})
        )
        fleet.start("seed-high", queues="high")
        # a spend only the fleet's own pool carries, for the seed's manager to see
        ours = AppConfig.model_validate(
            {"redis": {"key_prefix": namespace}, "exchanges": {"binance": {}}}
        )
        assert (
            ExchangeRateLimitManager(redis_client, ours)
            .decide("binance", "public", weight=PRE_SPENT)
            .allowed
        )
        env = {k: v for k, v in fleet.env().items() if k != "CRYPTO_AI_CONFIG"}
        run = subprocess.run(
            [sys.executable, "-m", "tests.integration.test_seed_examples", kind, str(out)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
        ticker_calls = admin(sb.url, "stats")["requests_by_endpoint"].get(
            "GET /api/v3/ticker/price", 0
        )
        breaker = redis_client.hgetall(f"{namespace}{{cb:binance:public}}")
    seen = json.loads(out.read_text())

    # a worker on the high queue answered the seed's submit_trading_request from the sandbox
    assert seen["basic_api_call"]["source"] == "exchange"
    assert float(seen["basic_api_call"]["price"]) > 0

    # check_request charged the fleet's own pool: it saw the spend made there before
    assert seen["rate_limiting"]["allowed"] is True
    apart = AppConfig.model_validate(
        {"redis": {"key_prefix": f"{namespace}apart:"}, "exchanges": {"binance": {}}}
    )
    fresh = ExchangeRateLimitManager(redis_client, apart).decide("binance", "public").remaining
    spent = seen["rate_limiting"]["remaining"]
    assert spent.keys() == fresh.keys()
    assert spent["REQUEST_WEIGHT"] <= fresh["REQUEST_WEIGHT"] - PRE_SPENT, "not the fleet's pool"

    # the urgent_trading payload went to the high queue; the worker's answer reached the callback
    assert seen["priority_queue"]["callback"] == "结果: None"
    assert seen["priority_queue"]["state"] == "FAILURE"
    assert "unknown payload action 'urgent_trading'" in seen["priority_queue"]["error"]

    # ResilientAPIClient(redis_client) used the fleet's config: the sandbox, over HTTP
    sandbox_symbols = sorted(s.replace("/", "") for s in ExchangeConfig().sandbox.symbols)
    assert seen["fallback"] == {"source": "exchange", "level": "NONE", "symbols": sandbox_symbols}
    assert ticker_calls >= 2, "the worker's call and the seed client's call reached the sandbox"

    assert seen["retry_exponential"] == ["EXPONENTIAL_BACKOFF", 5, 1.0, 2.0, 60.0]
    assert seen["retry_linear"] == ["LINEAR_BACKOFF", 3, 2.0, 2.0, 60.0]
    assert seen["retry_fibonacci"] == ["FIBONACCI_BACKOFF", 5, 1.0, 2.0, 60.0]
    assert seen["fallback_config"] == {
        "level": "PARTIAL",
        "cache_ttl": 300,
        "degraded": {"status": "degraded", "data": None},
    }

    # the status example printed the fleet's queues and its (shared, still closed) breaker
    assert seen["system_status"]["queues"] == ["high", "low", "medium"]
    assert any(line.startswith("高优先级队列: {") for line in seen["printed"])
    assert "binance:public: closed" in seen["printed"]
    assert breaker.get(b"state", b"closed") == b"closed", breaker
    assert int(breaker.get(b"failures", 0)) == 0 and int(breaker.get(b"trips", 0)) == 0, breaker


def test_with_no_config_the_seed_clients_use_the_fleets_config_file(
    redis_url: str, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.errors import InvalidRequestError
    from resilience import ResilientAPIClient

    monkeypatch.chdir(tmp_path)
    for name in [k for k in os.environ if k.startswith("CRYPTO_AI")]:
        monkeypatch.delenv(name)
    named = tmp_path / "named.yaml"
    named.write_text(yaml.safe_dump({"redis": {"key_prefix": f"{namespace}named:"}}))
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump({"redis": {"key_prefix": f"{namespace}cwd:"}, "exchanges": {"okx": {}}})
    )

    async def scenario() -> None:
        from advanced_rate_limiting import ExchangeRateLimitManager

        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            from_cwd = ResilientAPIClient(client)
            assert from_cwd.config.redis.key_prefix == f"{namespace}cwd:"
            assert set(from_cwd.config.exchanges) == {"okx"}
            assert set(ExchangeRateLimitManager(client).tables) == {"okx"}
            monkeypatch.setenv("CRYPTO_AI_CONFIG", str(named))
            from_env = ResilientAPIClient(client)
            assert from_env.config.redis.key_prefix == f"{namespace}named:"
            # no exchange configured: refused, never the real Binance with default settings
            with pytest.raises(InvalidRequestError, match="unknown exchange 'binance'"):
                await from_env.resilient_request("binance", "/api/v3/ticker/price")
            with pytest.raises(ValueError, match="unknown exchange 'binance'"):
                await ExchangeRateLimitManager(client).check_request("binance", "public")
            await from_cwd.close()
            await from_env.close()
        finally:
            await client.aclose()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("make", "connection", "expected"),
    [
        (
            lambda: redis.asyncio.Redis.from_url("redis://:pw@db.internal:6390/3"),
            redis.connection.Connection,
            {"host": "db.internal", "port": 6390, "db": 3, "password": "pw"},
        ),
        (
            lambda: redis.asyncio.Redis(host="tls.internal", ssl=True, ssl_ca_certs="/ca.pem"),
            redis.connection.SSLConnection,
            {"host": "tls.internal", "ssl_ca_certs": "/ca.pem", "ssl_cert_reqs": "required"},
        ),
        (
            lambda: redis.asyncio.Redis(unix_socket_path="/run/redis.sock", db=1),
            redis.connection.UnixDomainSocketConnection,
            {"path": "/run/redis.sock", "db": 1},
        ),
    ],
)
def test_a_sync_client_is_built_from_an_asyncio_clients_pool(
    make: Callable[[], redis.asyncio.Redis], connection: type, expected: dict[str, Any]
) -> None:
    from ratelimit.backends.redis import sync_client

    built = sync_client(make())
    assert isinstance(built, redis.Redis)
    assert built.connection_pool.connection_class is connection
    kwargs = built.connection_pool.connection_kwargs
    assert {k: kwargs.get(k) for k in expected} == expected
    assert kwargs["decode_responses"] is False, "the fleet's code reads bytes"
    same = redis.Redis()
    assert sync_client(same) is same
    with pytest.raises(TypeError, match=r"redis\.Redis or redis\.asyncio\.Redis"):
        sync_client("redis://localhost")  # type: ignore[arg-type]


def test_the_sync_client_reaches_the_same_server_as_the_asyncio_one(
    redis_url: str, namespace: str, redis_client: redis.Redis
) -> None:
    from ratelimit.backends.redis import sync_client

    async def write() -> redis.Redis:
        client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
        await client.set(f"{namespace}probe", "from asyncio")
        built = sync_client(client)
        await client.aclose()
        return built

    assert asyncio.run(write()).get(f"{namespace}probe") == b"from asyncio"


def main() -> None:
    """Run the seed's examples as a user process would; write what they produced as JSON."""
    kind, out = sys.argv[1], Path(sys.argv[2])
    out.write_text(json.dumps(asyncio.run(run_examples(kind)), ensure_ascii=False))


if __name__ == "__main__":
    main()
