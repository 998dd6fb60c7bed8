"""Bad starts and small frictions: every entry point refuses a bad config in a few lines,
a worker says when it is ready, ``crypto-ai logs``/``redis cli``, ``get_result``, and
``schedules.analysis.every`` written once."""

from __future__ import annotations

import asyncio
import logging
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

import celeryconfig
from core.config_loader import load_config
from core.errors import ConfigError
from monitoring.logs import RedisLogHandler
from tests.integration.sandbox_fixtures import running_sandbox
from tests.integration.workers import REPO_ROOT, worker_fleet
from workers.redis_server import EmbeddedRedis
from workers.redis_tools import redis_cli_command

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
ENTRY_POINTS = {
    "main.py": [sys.executable, "main.py"],
    "crypto-ai": [str(BIN / "crypto-ai"), "config", "check", "--no-markets"],
    "worker": [sys.executable, "-m", "celery", "-A", "workers", "worker"],
    "beat": [sys.executable, "-m", "celery", "-A", "workers", "beat"],
    "flower": [sys.executable, "-m", "celery", "-A", "workers", "flower"],
}
#: (file content, extra environment, what the error must name besides the file)
BAD_CONFIGS: dict[str, tuple[bytes, dict[str, str], str]] = {
    "broken-yaml": (b"redis: {url: [unclosed\n", {}, "not valid YAML"),
    "binary-file": (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", {}, "not a UTF-8 text file"),
    "env-wrong-type": (
        b"{}\n",
        {"CRYPTO_AI__CELERY__WORKER_CONCURRENCY": "lots"},
        "CRYPTO_AI__CELERY__WORKER_CONCURRENCY",
    ),
    "field-wrong-type": (b"celery:\n  worker_concurrency: lots\n", {}, "celery.worker_concurrency"),
}


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRYPTO_AI", "REDIS_"))}
    # nothing listens there: an entry point that wrongly accepted the config starts no Redis
    env.update({"PYTHONPATH": str(REPO_ROOT), "REDIS_URL": "redis://127.0.0.1:1/0", **extra})
    return env


def _run(command: list[str], env: dict[str, str], timeout: float = 90) -> tuple[int, str, str]:
    process = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
    return process.returncode, out, err


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_a_bad_config_stops_every_entry_point_with_its_render_and_no_traceback(
    entry: str, case: str, tmp_path: Path
) -> None:
    content, extra, named = BAD_CONFIGS[case]
    config = tmp_path / "config.yaml"
    config.write_bytes(content)
    env = _clean_env(CRYPTO_AI_CONFIG=str(config), **extra)
    with pytest.raises(ConfigError) as expected:
        load_config(config, env=env)
    code, _, err = _run(ENTRY_POINTS[entry], env)
    assert code == 2, err
    assert "Traceback" not in err
    assert err.strip() == expected.value.render()
    (line,) = err.strip().splitlines()  # one line: the file, the field, what was wrong
    assert str(config) in line and named in line


def test_a_standalone_worker_prints_a_ready_line(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump({"exchanges": {"binance": {}, "okx": {"enabled": False}}})
    )
    with worker_fleet(redis_url, namespace, tmp_path) as fleet:
        worker = fleet.start("ready-line", queues="high,medium,low")
        deadline = time.monotonic() + 30
        while "crypto-ai worker" not in worker.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        lines = [x for x in worker.log.read_text().splitlines() if "crypto-ai worker" in x]
    assert len(lines) == 1, worker.log.read_text()
    assert lines[0].startswith("crypto-ai worker ready-line@")
    assert "ready: queues high,medium,low; redis redis://" in lines[0]
    assert lines[0].endswith("; exchanges binance")


def _push_logs(url: str, key: str, records: list[tuple[int, str]]) -> None:
    logger = logging.getLogger(f"test.fleet.{key}")
    logger.propagate, logger.level = False, logging.DEBUG
    handler = RedisLogHandler(redis.Redis.from_url(url), key, 100, level=logging.DEBUG)
    logger.addHandler(handler)
    try:
        for level, message in records:
            logger.log(level, message)
    finally:
        logger.removeHandler(handler)


def _fleet_env(redis_url: str, namespace: str, tmp_path: Path) -> dict[str, str]:
    (tmp_path / "config.yaml").write_text("{}\n")
    return _clean_env(
        REDIS_URL=redis_url,
        CRYPTO_AI_CONFIG=str(tmp_path / "config.yaml"),
        CRYPTO_AI__REDIS__KEY_PREFIX=namespace,
    )


class _Lines:
    """Read whole lines from a pipe with a timeout (no buffering past what was asked for)."""

    def __init__(self, fd: int) -> None:
        self.fd, self.buffer = fd, b""

    def next(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self.fd, selectors.EVENT_READ)
            while b"\n" not in self.buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    raise TimeoutError(f"no line from crypto-ai logs --follow: {self.buffer!r}")
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    raise EOFError(self.buffer.decode())
                self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()


def test_crypto_ai_logs_prints_the_fleets_records_and_follows_new_ones(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    env = _fleet_env(redis_url, namespace, tmp_path)
    key = f"{namespace}logs:system"
    _push_logs(redis_url, key, [(logging.INFO, "first"), (logging.WARNING, "second")])
    _push_logs(redis_url, key, [(logging.ERROR, "third")])
    code, out, err = _run([str(BIN / "crypto-ai"), "logs", "--level", "warning"], env)
    assert code == 0, err
    lines = out.splitlines()
    assert [x.split(": ", 1)[1] for x in lines] == ["second", "third"]
    assert " WARNING test.fleet." in lines[0] and " ERROR " in lines[1]
    code, out, _ = _run([str(BIN / "crypto-ai"), "logs", "-n", "1"], env)
    assert out.splitlines()[0].endswith(": third")

    follow = subprocess.Popen(
        [str(BIN / "crypto-ai"), "logs", "--follow", "-n", "1"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert follow.stdout is not None
    lines_out = _Lines(follow.stdout.fileno())
    try:
        assert lines_out.next(30).endswith(": third")
        _push_logs(redis_url, key, [(logging.INFO, "fourth"), (logging.INFO, "fifth")])
        assert lines_out.next(30).endswith(": fourth")
        assert lines_out.next(30).endswith(": fifth")
    finally:
        os.killpg(follow.pid, signal.SIGKILL)
        follow.wait()


def test_crypto_ai_redis_cli_reaches_the_fleets_redis(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    env = _fleet_env(redis_url, namespace, tmp_path)
    redis_client.set(f"{namespace}probe", "here")
    code, out, err = _run([str(BIN / "crypto-ai"), "redis", "cli", "PING"], env)
    assert (code, out.strip()) == (0, "PONG"), err
    code, out, _ = _run([str(BIN / "crypto-ai"), "redis", "cli", "GET", f"{namespace}probe"], env)
    assert out.strip() == "here"


def test_crypto_ai_redis_cli_finds_the_running_embedded_server(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis", appendonly=False)  # on a random port
    server.start()
    try:
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump({"redis": {"embedded": {"dir": str(tmp_path / "redis")}}}))
        env = _clean_env(CRYPTO_AI_CONFIG=str(config))
        del env["REDIS_URL"]
        code, out, err = _run(
            [str(BIN / "crypto-ai"), "redis", "cli", "CONFIG", "GET", "port"], env
        )
    finally:
        server.stop()
    assert (code, out.split()) == (0, ["port", str(server.port)]), err


def test_crypto_ai_redis_cli_passes_the_password_outside_the_command_line(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis", appendonly=False, password="s3cret-pw")
    server.start()
    try:
        env = _clean_env(REDIS_URL=server.url)
        code, out, err = _run([str(BIN / "crypto-ai"), "redis", "cli", "PING"], env)
    finally:
        server.stop()
    assert (code, out.strip()) == (0, "PONG"), err
    argv, extra = redis_cli_command(Path("redis-cli"), server.url, ["PING"])
    assert "s3cret-pw" not in " ".join(argv) and extra == {"REDISCLI_AUTH": "s3cret-pw"}


def test_get_result_returns_the_tasks_result_or_raises_its_error(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    from main import MultiExchangeTradingSystem
    from workers import runtime

    with running_sandbox() as sb, worker_fleet(redis_url, namespace, tmp_path) as fleet:
        config = tmp_path / "config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "exchanges": {"binance": {"base_url": sb.url}},
                    "redis": {"url": redis_url, "key_prefix": namespace},
                }
            )
        )
        fleet.start("results", queues="high,medium,low")

        async def scenario() -> tuple[Any, BaseException | None]:
            system = MultiExchangeTradingSystem(config)
            await system.start()
            system.app = fleet.client_app()  # the same broker and prefix as the worker
            good = await system.submit_trading_request(
                exchange="binance", endpoint="/api/v3/ticker/price", params={"symbol": "BTCUSDT"}
            )
            bad = await system.submit_trading_request(exchange="nope", endpoint="/api/v3/time")
            answer = await system.get_result(good, timeout=30)
            try:
                await system.get_result(bad, timeout=30)
            except Exception as exc:  # the task's own error, raised here
                return answer, exc
            return answer, None

        try:
            answer, error = asyncio.run(scenario())
        finally:
            runtime.configure(runtime.config())  # forget this test's clients
    assert answer["source"] == "exchange" and float(answer["data"]["price"]) > 0
    assert error is not None and "nope" in str(error)


def test_schedules_analysis_every_is_written_once(tmp_path: Path) -> None:
    once = tmp_path / "once.yaml"
    once.write_text("schedules:\n  analysis: {task: analysis.run, every: 120, queue: low}\n")
    entry = celeryconfig.beat_schedule(load_config(once, env={}))["analysis"]
    assert entry["schedule"] == 120 and entry["kwargs"] == {"every": 120}
    assert celeryconfig.beat_schedule(load_config(env={}))["analysis"]["kwargs"]["every"] == 300

    twice = tmp_path / "twice.yaml"
    twice.write_text(
        "schedules:\n  analysis: {task: analysis.run, every: 120, kwargs: {every: 300}}\n"
    )
    code, _, err = _run(
        [str(BIN / "crypto-ai"), "config", "check", "--no-markets", str(twice)], _clean_env()
    )
    assert code == 2 and "Traceback" not in err
    assert "schedules.analysis: kwargs.every (300) differs from every (120)" in err
