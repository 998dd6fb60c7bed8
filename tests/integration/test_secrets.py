"""No configured secret reaches Redis, the AOF, reports, worker logs or Celery task results.

A full analysis cycle runs on real worker processes against a private redis-server (AOF
on, a password set) with every source of credential-bearing error text failing: news APIs
answering 401, 404 and 500 (the token travels as a query parameter), an exchange that
rejects the keys and echoes them back, an LLM server that answers 401 with the key in the
body, and a webhook that fails. Then everything the fleet wrote is scanned.
"""

from __future__ import annotations

import re
import secrets as random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from aiohttp import web

from core.config import SandboxConfig
from sandbox.server import Sandbox
from sandbox.thread import AppThread, SandboxThread
from tests.integration.fake_openai import Behaviour, make_app
from tests.integration.test_agents_cycle import analyse, reports, uptrend
from tests.integration.workers import worker_fleet
from workers.redis_server import EmbeddedRedis

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

#: A signed Binance request's signature as it would appear in a leaked URL or body.
SIGNATURE = re.compile(r"signature=[0-9a-f]{64}")


@dataclass
class Secrets:
    """Distinctive secret values; every one contains ``marker`` (and nothing else does)."""

    marker: str = field(default_factory=lambda: random.token_hex(8))

    def value(self, kind: str) -> str:
        """Return the secret of one kind, e.g. ``sk-LEAK-llm-<marker>``."""
        return f"{kind}-LEAK-{self.marker}"

    @property
    def binance_key(self) -> str:
        return self.value("sk-binance-key")

    @property
    def binance_secret(self) -> str:
        return self.value("sk-binance-secret")

    @property
    def binance_password(self) -> str:
        return self.value("pp-binance-pass")

    @property
    def llm_key(self) -> str:
        return self.value("sk-llm")

    @property
    def redis_password(self) -> str:
        return self.value("pw-redis")

    @property
    def flower_password(self) -> str:
        return self.value("fl-flower")

    def news_token(self, status: int) -> str:
        return self.value(f"tok-news{status}")

    @property
    def url_token(self) -> str:
        """A token written into a news API's URL (not a SecretStr: only patterns catch it)."""
        return self.value("tok-inurl")

    def webhook(self, base: str) -> str:
        return f"{base}/hook/{self.value('wh-path')}?token={self.value('wh-tok')}"


class Servers:
    """The failing services of the cycle, each on 127.0.0.1, recording what they were sent."""

    def __init__(self, leak: Secrets) -> None:
        self.leak = leak
        self.news_tokens: list[str] = []
        self.llm_auth: list[str] = []
        self.hooks: list[bytes] = []
        self.rejected: list[str] = []
        self.reject_keys = False

    def news_app(self) -> web.Application:
        async def answer(request: web.Request) -> web.Response:
            self.news_tokens.append(request.query.get("auth_token", ""))
            status = int(request.match_info["status"])
            return web.json_response({"detail": "no"}, status=status)

        app = web.Application()
        app.router.add_get("/api/{status}/posts", answer)
        return app

    def llm_app(self) -> web.Application:
        @web.middleware
        async def unauthorized(request: web.Request, handler: Any) -> web.StreamResponse:
            # a provider (or a proxy) that quotes the credential it refused, in full
            auth = request.headers.get("Authorization", "")
            self.llm_auth.append(auth)
            message = f"Incorrect API key provided: {auth.removeprefix('Bearer ')}"
            error = {"message": message, "type": "invalid_request_error", "code": "invalid_api_key"}
            return web.json_response({"error": error}, status=401)

        app = make_app(Behaviour())
        app.middlewares.append(unauthorized)
        return app

    def hook_app(self) -> web.Application:
        async def hook(request: web.Request) -> web.Response:
            self.hooks.append(await request.read())
            return web.Response(status=500, text="hook down")

        app = web.Application()
        app.router.add_post("/hook/{token}", hook)
        return app

    def sandbox(self, candles: Path) -> Sandbox:
        settings = {
            "api_key": self.leak.binance_key,
            "api_secret": self.leak.binance_secret,
            "starting_balances": {"USDT": 10000},
            "candles_file": str(candles),
            "history_days": 5,
            "symbols": ["BTC/USDT", "ETH/USDT"],
        }
        sandbox = Sandbox(SandboxConfig.model_validate(settings))

        @web.middleware
        async def echo_rejection(request: web.Request, handler: Any) -> web.StreamResponse:
            key = request.headers.get("X-MBX-APIKEY")
            if self.reject_keys and key:
                # an exchange that quotes the refused key and the signed request back
                self.rejected.append(request.path)
                message = f"Invalid API-key {key} for {request.method} {request.path_qs}"
                return web.json_response({"code": -2014, "msg": message}, status=401)
            return await handler(request)

        sandbox.app.middlewares.insert(0, echo_rejection)
        return sandbox


@dataclass
class Running:
    """The started servers' URLs."""

    news: str
    llm: str
    hook: str
    exchange: str


@pytest.fixture
def leak() -> Secrets:
    return Secrets()


@pytest.fixture
def private_redis(tmp_path: Path, leak: Secrets) -> Iterator[EmbeddedRedis]:
    """A redis-server of this test only: AOF on (so history is kept), a password set."""
    server = EmbeddedRedis(tmp_path / "redis", appendonly=True, password=leak.redis_password)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def write_config(tmp: Path, running: Running, leak: Secrets) -> Path:
    apis = [
        {"name": f"api{status}", "url": f"{running.news}/api/{status}/posts", "token": token}
        for status, token in ((401, leak.news_token(401)), (500, leak.news_token(500)))
    ]
    apis.append(
        {
            "name": "api404",
            "url": f"{running.news}/api/404/posts?apikey={leak.url_token}",
            "token": leak.news_token(404),
        }
    )
    config = {
        "exchanges": {"binance": {"base_url": running.exchange}},
        "watchlist": [{"exchange": "binance", "symbols": ["BTC/USDT", "ETH/USDT"]}],
        "news": {"apis": apis, "fetch_timeout": 5},
        "llm": {"base_url": running.llm, "model": "local", "timeout": 5},
        "reports": {"dir": str(tmp / "reports")},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def secret_env(leak: Secrets, hook: str) -> dict[str, str]:
    """Return the secrets as the environment gives them to every process of the fleet."""
    return {
        "BINANCE_API_KEY": leak.binance_key,
        "BINANCE_API_SECRET": leak.binance_secret,
        "BINANCE_API_PASSWORD": leak.binance_password,
        "OPENAI_API_KEY": leak.llm_key,
        "CRYPTO_AI__MONITORING__ALERTS__WEBHOOK_URL": leak.webhook(hook),
        "CRYPTO_AI__MONITORING__FLOWER__BASIC_AUTH": f"admin:{leak.flower_password}",
        # every reading with a call in it fires an alert, so the webhook is called
        "CRYPTO_AI__MONITORING__ALERTS__THRESHOLDS__RESPONSE_TIME": "0.001",
    }


def dump_redis(client: redis.Redis) -> dict[str, str]:
    """Return every key of the server and its whole value, whatever its type, as text."""
    readers = {
        "string": client.get,
        "list": lambda k: client.lrange(k, 0, -1),
        "hash": client.hgetall,
        "set": client.smembers,
        "zset": lambda k: client.zrange(k, 0, -1, withscores=True),
        "stream": client.xrange,
    }
    dumped = {}
    for key in client.scan_iter(match="*", count=1000):
        kind = client.type(key).decode()
        if kind == "none":
            continue  # expired between SCAN and TYPE
        assert kind in readers, f"key {key!r} has a type the scan cannot read: {kind}"
        dumped[key.decode(errors="replace")] = _text(readers[kind](key))
    return dumped


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, dict):
        return " ".join(f"{_text(k)}={_text(v)}" for k, v in value.items())
    if isinstance(value, list | tuple | set):
        return " ".join(_text(v) for v in value)
    return str(value)


def files_text(folder: Path) -> dict[str, str]:
    return {
        str(p): p.read_bytes().decode(errors="replace") for p in folder.rglob("*") if p.is_file()
    }


def leaks_in(sources: dict[str, str], leak: Secrets, known: list[str]) -> list[str]:
    """Return ``where: ...context...`` for every secret (or signature) found in the sources."""
    found = []
    needles = [leak.marker, *known]
    for where, text in sources.items():
        for needle in needles:
            start = text.find(needle)
            if start >= 0:
                found.append(f"{where}: ...{text[max(0, start - 120) : start + 60]!r}...")
                break
        match = SIGNATURE.search(text)
        if match:
            found.append(f"{where}: a request signature ...{match.group(0)}...")
    return found


def test_no_secret_reaches_redis_the_aof_reports_logs_or_task_results(
    tmp_path: Path, namespace: str, leak: Secrets, private_redis: EmbeddedRedis
) -> None:
    servers = Servers(leak)
    news, llm, hook = (
        AppThread(servers.news_app()),
        AppThread(servers.llm_app()),
        AppThread(servers.hook_app()),
    )
    exchange = SandboxThread(servers.sandbox(uptrend(tmp_path)))
    for thread in (news, llm, hook, exchange):
        thread.start()
    outputs: dict[str, str] = {}
    try:
        running = Running(news.url, f"{llm.url}/v1", hook.url, exchange.url)
        config = write_config(tmp_path, running, leak)
        overrides = secret_env(leak, hook.url)
        with worker_fleet(private_redis.url, namespace, tmp_path, **overrides) as fleet:
            fleet.start("agents", concurrency=2)
            env = fleet.env()
            # cycle 1: the keys work (orders, reports); news and LLM fail
            first = analyse(env, config)
            outputs["cycle 1 output"], _ = first.communicate(timeout=240)
            assert reports(tmp_path), outputs["cycle 1 output"]
            # then the exchange refuses the keys, quoting them back: one call (before the
            # cycle's failures can open the breaker), then cycle 2
            servers.reject_keys = True
            app = fleet.client_app()
            refused = app.send_task(
                "exchange.request", args=["binance", "fetch_balance", {}, "none"], queue="high"
            )
            with pytest.raises(Exception) as refusal:
                refused.get(timeout=60)
            second = analyse(env, config)
            outputs["cycle 2 output"], _ = second.communicate(timeout=240)
            # a non-project exception whose text holds credentials (URL userinfo, a key param)
            odd = app.send_task(
                "fleet.payload",
                args=[{"action": "https://bob:hunter2-pattern@h/?api_key=pattern-value"}],
                queue="high",
            )
            with pytest.raises(ValueError) as odd_error:
                odd.get(timeout=60)
            alerts = app.send_task("monitor.alerts", queue="high").get(timeout=60)
            app.close()
        client = redis.Redis.from_url(private_redis.url)
        stored = dump_redis(client)
        client.close()
    finally:
        for thread in (news, llm, hook, exchange):
            thread.stop()
    private_redis.stop()  # redis-server writes (and syncs) its AOF on the way out

    # the faults happened: every secret was sent where it belongs, and failed there
    assert sorted(set(servers.news_tokens)) == sorted(leak.news_token(s) for s in (401, 404, 500))
    assert f"Bearer {leak.llm_key}" in servers.llm_auth
    assert servers.rejected, "the exchange never refused the keys"
    assert servers.hooks and alerts, "an alert went to the webhook"
    assert "AuthenticationError" in str(refusal.value)
    written = reports(tmp_path)
    first_run = min(r["run_id"] for r in written)
    assert len([r for r in written if r["run_id"] == first_run]) == 2, "cycle 1: one per symbol"
    assert [k for k in stored if k.startswith(f"{namespace}celery-task-meta-")]
    assert stored.get(f"{namespace}logs:system"), "the log copy in Redis is there to scan"
    aof = {p: t for p, t in files_text(tmp_path / "redis").items() if ".aof" in p}
    assert aof and any(namespace in t for t in aof.values()), "the AOF holds the fleet's writes"
    logs = {str(p): p.read_text(errors="replace") for p in tmp_path.glob("*.log")}
    assert any("401" in t for t in logs.values()), "the workers logged the failures"

    known = [
        leak.binance_key,
        leak.binance_secret,
        leak.binance_password,
        leak.llm_key,
        leak.redis_password,
        leak.flower_password,
        leak.url_token,
        *(leak.news_token(s) for s in (401, 404, 500)),
    ]
    sources = {
        **{f"redis key {k}": v for k, v in stored.items()},
        **{f"redis data dir {k}": v for k, v in files_text(tmp_path / "redis").items()},
        **{f"report {k}": v for k, v in files_text(tmp_path / "reports").items()},
        **{f"worker log {k}": v for k, v in logs.items()},
        **outputs,
        "task result (refused keys)": f"{refusal.value!r} {refusal.traceback}",
        "task result (odd payload)": repr(odd_error.value),
        "webhook bodies": " ".join(b.decode(errors="replace") for b in servers.hooks),
    }
    found = leaks_in(sources, leak, known)
    assert found == [], f"secrets leaked in {len(found)} places:\n" + "\n".join(found)

    # what was redacted still says what went wrong
    assert "***" in str(refusal.value)
    assert "bob:***@h" in str(odd_error.value) and "api_key=***" in str(odd_error.value)
    redacted_news = [k for k, v in stored.items() if "auth_token=***" in v]
    assert redacted_news, "the news API's failure is cached, with its token redacted"


def test_the_marker_scan_finds_a_planted_secret(tmp_path: Path, leak: Secrets) -> None:
    # the scan above must be able to fail: a secret planted in each kind of source is found
    planted = {
        "redis": f"ClientResponseError: 401, url='http://h/x?auth_token={leak.news_token(401)}'",
        "log": f"Authorization: Bearer {leak.llm_key}",
        "aof": f"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${len(leak.redis_password)}\r\n{leak.redis_password}",
        "signed": "GET /api/v3/account?timestamp=1&signature=" + "ab" * 32,
        "partial": f"key ...{leak.marker}",
    }
    found = leaks_in(planted, leak, [leak.llm_key])
    assert [f.split(":", 1)[0] for f in found] == list(planted)
    assert leaks_in({"clean": f"auth_token=*** {uuid.uuid4().hex}"}, leak, []) == []
