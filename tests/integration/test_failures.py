"""A failed stage reaches the waiter at once, as one line per symbol, and fails the exit code.

Real Redis, real ``celery worker`` processes and the sandbox exchange over HTTP. The CLI waits
up to ``--timeout`` seconds; a run with a failed symbol must end long before that.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
import yaml

from tests.integration.sandbox_fixtures import running_sandbox
from tests.integration.workers import REPO_ROOT, worker_fleet

pytestmark = pytest.mark.integration

#: What the CLI waits for at most; every run here must end well before it.
CLI_TIMEOUT = 300
UNKNOWN = "binance FOO/BAR: failed in market.snapshot: InvalidRequestError: " + (
    "binance has no market 'FOO/BAR'"
)
DECISION = re.compile(r"^binance BTC/USDT: (BUY|SELL|HOLD)\b", re.MULTILINE)


def write_config(tmp: Path, url: str, symbols: list[str], **extra: Any) -> Path:
    """Write a config with the sandbox as binance and ``symbols`` as the watchlist."""
    config = {
        "exchanges": {"binance": {"base_url": url, "sandbox": {"history_days": 1}}},
        "watchlist": [{"exchange": "binance", "symbols": symbols}],
        "reports": {"dir": str(tmp / "reports")},
        **extra,
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_cli(args: list[str], env: dict[str, str], cwd: Path = REPO_ROOT) -> tuple[Any, float]:
    """Run ``args`` to the end; return the completed process and how long it took.

    A command still running after its own timeout gets Ctrl-C, so that ``--once`` stops the
    fleet it started instead of leaving it behind.
    """
    started = time.monotonic()
    process = subprocess.Popen(
        args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = process.communicate(timeout=CLI_TIMEOUT + 60)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        try:
            out, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
    elapsed = time.monotonic() - started
    return subprocess.CompletedProcess(args, process.returncode, out, err), elapsed


def analyse(redis_url: str, namespace: str, tmp: Path, config: Path) -> tuple[Any, float]:
    """Run ``crypto-ai analyse`` against a test fleet of one worker running ``config``."""
    command = [sys.executable, "-m", "workers.cli", "analyse", "--config", str(config)]
    with worker_fleet(redis_url, namespace, tmp, config=config) as fleet:
        fleet.start("agents", concurrency=2)
        return run_cli([*command, "--timeout", str(CLI_TIMEOUT)], fleet.env())


def assert_clean(stderr: str) -> None:
    """Fail on a traceback or an ignored exception on stderr."""
    assert "Traceback" not in stderr, stderr
    assert "Exception ignored" not in stderr, stderr


def stored_error(client: redis.Redis, namespace: str, symbol: str) -> dict[str, Any]:
    """Return the error record a run stored for ``symbol`` (the only run of the test)."""
    keys = list(client.scan_iter(match=f"{namespace}run:*:binance:{symbol}:error"))
    assert len(keys) == 1, keys
    raw = client.get(keys[0])
    assert raw is not None
    return dict(json.loads(raw))


def test_analyse_reports_an_unknown_symbol_at_once_and_the_other_symbols_decision(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with running_sandbox(symbols=["BTC/USDT", "ETH/USDT"]) as sb:
        config = write_config(tmp_path, sb.url, ["BTC/USDT", "FOO/BAR"])
        done, elapsed = analyse(redis_url, namespace, tmp_path, config)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert elapsed < CLI_TIMEOUT / 3, f"waited {elapsed:.0f}s: the failure did not reach it"
    assert UNKNOWN in output.splitlines(), output
    assert DECISION.search(done.stdout), output
    assert_clean(done.stderr)
    error = stored_error(redis_client, namespace, "FOOBAR")
    assert error["stage"] == "market.snapshot"
    assert error["error"] == "InvalidRequestError"
    assert error["message"] == "binance has no market 'FOO/BAR'"
    assert list(redis_client.scan_iter(match=f"{namespace}run:*:binance:BTCUSDT:error")) == []


def free_port() -> int:
    """Return a TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def operator_env() -> dict[str, str]:
    """Return the environment an operator's shell has: no fleet settings at all."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRYPTO_AI", "REDIS_"))}
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env


@pytest.mark.timeout(CLI_TIMEOUT + 180)
def test_main_once_reports_an_unknown_symbol_and_stops_everything(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # run_once starts the sandbox on this port
    config = write_config(
        tmp_path,
        url,
        ["BTC/USDT", "FOO/BAR"],
        redis={"embedded": {"dir": str(tmp_path / "redis"), "appendonly": False}},
        monitoring={"prometheus_port": 0},
    )
    done, elapsed = run_cli(
        [sys.executable, str(REPO_ROOT / "main.py"), "--once", "--config", str(config)],
        operator_env(),
        cwd=tmp_path,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    # --once waits up to 600 s for the cycle; starting the fleet takes the rest
    assert elapsed < CLI_TIMEOUT, f"took {elapsed:.0f}s: the failure did not reach the waiter"
    assert UNKNOWN in output.splitlines(), output
    assert DECISION.search(done.stdout), output
    assert_clean(done.stderr)
    left = [p.info for p in psutil.process_iter(["pid", "cmdline", "cwd"]) if in_dir(p, tmp_path)]
    assert left == [], "processes of the fleet outlived --once"


def in_dir(process: psutil.Process, folder: Path) -> bool:
    """Return True if ``process`` runs in ``folder`` or below it."""
    cwd = process.info.get("cwd")
    return bool(cwd) and Path(cwd).is_relative_to(folder)


@pytest.mark.parametrize("outage", ["malformed klines", "exchange down"])
def test_analyse_reports_a_dead_exchange_at_once(
    outage: str, redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    faults = [{"kind": "malformed_json", "endpoint": "GET /api/v3/klines", "rate": 1.0}]
    with running_sandbox(faults=faults) as sb:
        # a port nothing listens on is an exchange that is down
        url = sb.url if outage == "malformed klines" else f"http://127.0.0.1:{free_port()}"
        config = write_config(tmp_path, url, ["BTC/USDT"])
        done, elapsed = analyse(redis_url, namespace, tmp_path, config)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert elapsed < CLI_TIMEOUT / 3, f"waited {elapsed:.0f}s: the failure did not reach it"
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("binance BTC/USDT: ")]
    error = stored_error(redis_client, namespace, "BTCUSDT")
    assert error["stage"] == "market.snapshot", error
    # the exchange's own error, or the breaker it opened on the way (retries share it)
    cause = "MalformedResponseError" if outage == "malformed klines" else "RetryableError"
    assert error["error"] in (cause, "CircuitOpenError"), error
    assert line == (
        f"binance BTC/USDT: failed in market.snapshot: {error['error']}: {error['message']}"
    )
    assert_clean(done.stderr)


def config_check(config: Path, *extra: str) -> Any:
    """Run ``crypto-ai config check`` on ``config``."""
    command = [sys.executable, "-m", "workers.cli", "config", "check", str(config), *extra]
    return subprocess.run(
        command, cwd=REPO_ROOT, env=operator_env(), capture_output=True, text=True, timeout=120
    )


def test_config_check_refuses_a_symbol_the_exchange_does_not_list(tmp_path: Path) -> None:
    (tmp_path / "good").mkdir()
    with running_sandbox(symbols=["BTC/USDT", "ETH/USDT"]) as sb:
        refused = config_check(write_config(tmp_path, sb.url, ["BTC/USDT", "FOO/BAR"]))
        accepted = config_check(write_config(tmp_path / "good", sb.url, ["BTC/USDT"]))
        unchecked = config_check(tmp_path / "config.yaml", "--no-markets")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stdout == ""
    (line,) = refused.stderr.strip().splitlines()
    assert line.endswith(": watchlist.0.symbols: binance has no market 'FOO/BAR'"), line
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "valid." in accepted.stdout
    assert unchecked.returncode == 0, unchecked.stdout + unchecked.stderr


def test_config_check_notes_markets_it_cannot_read(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"http://127.0.0.1:{free_port()}", ["FOO/BAR"])
    started = time.monotonic()
    result = config_check(config)
    assert result.returncode == 0, result.stderr
    assert "valid." in result.stdout
    assert "note: could not read binance's markets" in result.stdout + result.stderr
    assert time.monotonic() - started < 60
