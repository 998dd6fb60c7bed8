"""The fleet survives its Redis being killed (kill -9) and started again mid-cycle.

Real redis-server with AOF on a fixed port and directory, real worker processes, the
sandbox over HTTP and ``crypto-ai analyse``. ``REDIS_CHAOS_TRIALS`` (``make stress``: 10)
kills and restarts Redis that many times in a row, one analysis run each.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from tests.integration.sandbox_fixtures import running_sandbox
from tests.integration.test_agents_cycle import reports, uptrend, write_config
from tests.integration.workers import REPO_ROOT, WorkerFleet, worker_fleet
from workers.redis_server import EmbeddedRedis

pytestmark = pytest.mark.integration

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
TRIALS = int(os.environ.get("REDIS_CHAOS_TRIALS", "1"))
#: What ``analyse`` waits at most; a symbol "still running" then was silently lost.
RUN_TIMEOUT = 60


def analyse(env: dict[str, str], config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workers.cli",
            "analyse",
            "--config",
            str(config),
            "--timeout",
            str(RUN_TIMEOUT),
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_mid_cycle(url: str, namespace: str, run: subprocess.Popen[str], stages: int) -> None:
    """Block until the run has written ``stages`` stage outputs (the cycle is under way)."""
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and run.poll() is None:
            if (
                len(list(client.scan_iter(match=f"{namespace}run:*:binance:*", count=500)))
                >= stages
            ):
                return
            time.sleep(0.05)
    finally:
        client.close()
    raise AssertionError("the run never got under way")


def outcomes(output: str) -> dict[str, str]:
    """Return each symbol's outcome line from ``analyse``'s output."""
    found = {}
    for symbol in SYMBOLS:
        lines = re.findall(rf"^binance {re.escape(symbol)}: (.+)$", output, re.M)
        if lines:
            found[symbol] = lines[-1]
    return found


def run_id_of(output: str) -> str:
    match = re.search(r"^run (\S+): \d+ symbols submitted", output, re.M)
    assert match, output
    return match.group(1)


def stages_written(url: str, namespace: str, run_id: str, symbol: str) -> list[str]:
    """Return the stage outputs a symbol's run has in Redis (where a lost chain stalled)."""
    client = redis.Redis.from_url(url)
    try:
        prefix = f"{namespace}run:{run_id}:binance:{symbol.replace('/', '')}:"
        keys = client.scan_iter(match=prefix + "*", count=500)
        return sorted(key.decode()[len(prefix) :] for key in keys)
    finally:
        client.close()


def dead_workers(fleet: WorkerFleet) -> list[str]:
    return [w.name for w in fleet.workers if w.process.poll() is not None]


def unrecoverable(fleet: WorkerFleet) -> list[str]:
    return [
        w.name for w in fleet.workers if "Unrecoverable error" in w.log.read_text(errors="replace")
    ]


def test_fleet_survives_redis_kill_and_restart_mid_cycle(namespace: str, tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis", appendonly=True)
    url = server.start()
    lost: list[str] = []
    try:
        with running_sandbox(
            starting_balances={"USDT": 10000},
            candles_file=str(uptrend(tmp_path)),
            history_days=5,
            symbols=SYMBOLS,
        ) as sb:
            config = write_config(tmp_path, sb.url, SYMBOLS)
            with worker_fleet(url, namespace, tmp_path, config=config) as fleet:
                fleet.start("agents-a", concurrency=2)
                fleet.start("agents-b", concurrency=1)
                for trial in range(TRIALS):
                    run = analyse(fleet.env(), config)
                    wait_mid_cycle(url, namespace, run, stages=1 + trial % 4)
                    server.kill()
                    time.sleep(1.5)
                    server.start()
                    output, _ = run.communicate(timeout=RUN_TIMEOUT + 60)
                    found = outcomes(output)
                    missing = [s for s in SYMBOLS if s not in found]
                    hung = [s for s, line in found.items() if "still running" in line]
                    lost += [
                        f"trial {trial}: {s}: {found.get(s)} (stages written: "
                        f"{stages_written(url, namespace, run_id_of(output), s)})"
                        for s in missing + hung
                    ]
                    assert run.returncode in (0, 1), output
                    assert not dead_workers(fleet), f"trial {trial}: {dead_workers(fleet)}"
                after = analyse(fleet.env(), config)
                output, _ = after.communicate(timeout=RUN_TIMEOUT + 60)
                dead, broken = dead_workers(fleet), unrecoverable(fleet)
    finally:
        server.stop()
    assert dead == [] and broken == [], (dead, broken)
    assert lost == [], f"chains lost without an outcome in {TRIALS} trials: {lost}"
    assert after.returncode == 0, output
    done = [r["symbol"] for r in reports(tmp_path) if r.get("run_id") == run_id_of(output)]
    assert sorted(done) == SYMBOLS, output
