"""`crypto-ai up`, `python main.py` and `crypto-ai config check` as an operator runs them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRYPTO_AI", "REDIS_"))}
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_config_check_prints_one_clear_error_and_exits_non_zero(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "exchanges:\n  binance:\n    rate_limits:\n      - {type: token_bucket, rate: 1}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "workers.cli", "config", "check", str(bad)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(tmp_path),
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip() == (
        f"invalid configuration in {bad}: "
        "exchanges.binance.rate_limits.0: a token_bucket limit needs capacity"
    )


def test_config_check_refuses_a_visibility_timeout_an_order_could_outlive(tmp_path: Path) -> None:
    bad = tmp_path / "tight.yaml"
    bad.write_text("celery:\n  visibility_timeout: 320\n  max_countdown: 0\n")
    result = subprocess.run(
        [sys.executable, "-m", "workers.cli", "config", "check", "--no-markets", str(bad)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(tmp_path),
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"invalid configuration in {bad}: "
        "celery.visibility_timeout: 320s leaves no room for an order request in flight when "
        "a worker dies: it must be longer than task_time_limit (300s) plus the longest "
        "exchange request (40s, performance.connection_pooling connect + read timeout)"
    )


def test_config_check_accepts_the_shipped_config() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "workers.cli", "config", "check", "config.yaml"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=_env(REPO_ROOT),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "config.yaml: valid." in result.stdout
    assert "trading: paper" in result.stdout


def test_main_with_a_broken_config_starts_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "config.yaml"
    bad.write_text("redis: {port: -1}\n")
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "main.py")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(tmp_path),
        timeout=60,
    )
    assert result.returncode != 0
    assert "redis.port: Input should be greater than or equal to 1 (got -1)" in result.stderr
    assert not (tmp_path / ".crypto-ai").exists(), "something started before validation"


def test_up_runs_every_tier_and_ctrl_c_leaves_no_process_behind(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    sandbox = f"http://127.0.0.1:{_free_port()}"
    metrics_port = _free_port()
    config.write_text(
        f"redis: {{embedded: {{dir: '{tmp_path / 'redis'}', appendonly: false}}}}\n"
        f"monitoring: {{flower: {{port: {_free_port()}}}, prometheus_port: {metrics_port}}}\n"
        f"exchanges: {{binance: {{base_url: '{sandbox}', sandbox: {{history_days: 1}}}}}}\n"
    )
    log = tmp_path / "up.log"
    secrets = {"BINANCE_API_KEY": "key-UP-S3CRET", "BINANCE_API_SECRET": "sec-UP-S3CRET"}
    with log.open("wb") as out:
        fleet = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "up", "--config", str(config)],
            cwd=REPO_ROOT,
            env=_env(tmp_path) | secrets,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        wanted = {f"[health] {q}: answered by" for q in ("high", "medium", "low")}
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            if all(line in text for line in wanted):
                break
            assert fleet.poll() is None, text
            time.sleep(0.5)
        else:
            raise AssertionError("no health answers from every queue:\n" + log.read_text())
        children = psutil.Process(fleet.pid).children(recursive=True)
        names = " ".join(" ".join(c.cmdline()) for c in children)
        for part in (
            "-Q high ",
            "-Q high,medium ",
            "-Q high,medium,low",
            " beat ",
            " flower ",
            "redis-server",
            " sandbox --exchange binance",
        ):
            assert part in names + " ", f"{part!r} not running"
        with urllib.request.urlopen(f"{sandbox}/api/v3/ping", timeout=10) as answer:
            assert answer.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as page:
            scrape = page.read().decode()
        # the health tasks ran in the workers' pool processes; the supervisor's scrape has them
        for queue in ("high", "medium", "low"):
            assert f'crypto_ai_task_seconds_count{{queue="{queue}",task="health.ping"}}' in scrape
        fleet.send_signal(signal.SIGINT)
        assert fleet.wait(60) == 0, log.read_text()
        _, alive = psutil.wait_procs(children, timeout=10)
        assert alive == [], [p.pid for p in alive]
        assert "all processes stopped" in log.read_text()
        for secret in secrets.values():
            assert secret not in log.read_text() and secret not in scrape
    finally:
        if fleet.poll() is None:
            fleet.kill()


def test_status_shows_the_fleet_without_any_secret(tmp_path: Path) -> None:
    import json

    from workers.redis_server import EmbeddedRedis

    config = tmp_path / "config.yaml"
    config.write_text("exchanges:\n  binance: {base_url: 'https://api.binance.com'}\n")
    with EmbeddedRedis(tmp_path / "redis", appendonly=False, password="pw-S3CRET-9") as server:
        env = _env(tmp_path) | {
            "REDIS_URL": server.url,
            "BINANCE_API_KEY": "key-S3CRET-1",
            "BINANCE_API_SECRET": "sec-S3CRET-2",
            "OPENAI_API_KEY": "sk-S3CRET-3",
        }
        result = subprocess.run(
            [sys.executable, "-m", "workers.cli", "status", "--json", "--config", str(config)],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            env=env,
            timeout=60,
        )
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["redis"] == f"redis://:***@127.0.0.1:{server.port}/0"
    assert set(status["queues"]) == {"high", "medium", "low"}
    assert status["breakers"]["binance:orders"]["state"] == "closed"
    assert "REQUEST_WEIGHT" in status["budgets"]["binance"]
    for secret in ("pw-S3CRET-9", "key-S3CRET-1", "sec-S3CRET-2", "sk-S3CRET-3"):
        assert secret not in result.stdout + result.stderr
