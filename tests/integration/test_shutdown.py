"""Stopping the fleet: whatever stops its parent, no process and no port of the fleet is left.

``python main.py --once`` and ``crypto-ai up`` run as an operator, cron, systemd or a
container runtime run them, and get a stop signal mid-cycle (or are killed outright). The
process tree and the listening ports are recorded before the signal and checked after it.
The default suite runs SIGTERM and SIGKILL for ``--once``, SIGKILL for ``up`` (its Ctrl-C is in
test_fleet.py); ``SHUTDOWN_MATRIX=1`` (``make stress``) runs
every signal against both entry points.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
import yaml

from tests.integration.workers import REPO_ROOT

pytestmark = pytest.mark.integration

FULL_MATRIX = bool(os.environ.get("SHUTDOWN_MATRIX"))
#: Seconds the fleet under test gives running tasks before it kills its workers.
GRACE = 5


def _matrix(default: list[Any], full: list[Any]) -> list[Any]:
    return full if FULL_MATRIX else default


def free_port() -> int:
    """Return a TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def operator_env() -> dict[str, str]:
    """Return an operator's environment: no fleet settings, unbuffered output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRYPTO_AI", "REDIS_"))}
    return env | {"PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}


def write_config(tmp: Path) -> Path:
    """Write a config with an embedded Redis, a sandbox whose klines hang, and a watchlist.

    The hanging klines keep the analysis cycle running (and tasks in flight) when the signal
    comes, whenever it comes.
    """
    hang = {"kind": "hang", "endpoint": "GET /api/v3/klines", "seconds": 20}
    url = f"http://127.0.0.1:{free_port()}"
    config = {
        "redis": {"embedded": {"dir": str(tmp / "redis"), "appendonly": False}},
        "monitoring": {"prometheus_port": 0, "flower": {"port": free_port()}},
        "exchanges": {
            "binance": {"base_url": url, "sandbox": {"history_days": 1, "faults": [hang]}}
        },
        "watchlist": [{"exchange": "binance", "symbols": ["BTC/USDT", "ETH/USDT"]}],
        "reports": {"dir": str(tmp / "reports")},
        "celery": {"shutdown_grace_seconds": GRACE},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def wait_for(
    log: Path, process: subprocess.Popen[bytes], wanted: list[str], timeout: float
) -> None:
    """Block until every line of ``wanted`` is in ``log``; fail if ``process`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if all(w in text for w in wanted):
            return
        assert process.poll() is None, f"exited with {process.returncode}:\n{text}"
        time.sleep(0.3)
    raise AssertionError(f"no {wanted} within {timeout}s:\n{log.read_text(errors='replace')}")


def fleet_tree(parent: int) -> tuple[list[psutil.Process], set[int]]:
    """Return every process below ``parent`` and the TCP ports they listen on."""
    children = psutil.Process(parent).children(recursive=True)
    ports: set[int] = set()
    for child in children:
        try:
            connections = child.net_connections(kind="tcp")
        except psutil.Error:
            continue
        ports |= {c.laddr.port for c in connections if c.status == psutil.CONN_LISTEN}
    return children, ports


def alive(processes: list[psutil.Process]) -> list[str]:
    """Return the command lines of ``processes`` still running (zombies are gone)."""
    left = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{process.pid}: {' '.join(process.cmdline())}")
        except psutil.NoSuchProcess:
            continue
    return left


def assert_all_gone(processes: list[psutil.Process], ports: set[int], timeout: float) -> None:
    """Fail unless every process ends and every port closes within ``timeout``."""
    deadline = time.monotonic() + timeout
    while alive(processes) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert alive(processes) == [], "processes of the fleet outlived their parent"
    listening = []
    for port in sorted(ports):
        with socket.socket() as probe:
            probe.settimeout(1.0)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                listening.append(port)
    assert listening == [], "ports of the fleet still open"


def kill_tree(processes: list[psutil.Process]) -> None:
    """SIGKILL whatever of ``processes`` is left (a failed test leaves nothing behind)."""
    for process in processes:
        try:
            process.kill()
        except psutil.Error:
            continue


def start(command: list[str], tmp: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """Start ``command`` in ``tmp`` with its output in ``tmp/out.log``."""
    log = tmp / "out.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=tmp, env=operator_env(), stdout=out, stderr=subprocess.STDOUT
        )
    return process, log


def signal_and_check(
    process: subprocess.Popen[bytes], log: Path, sig: signal.Signals, expected_code: int | None
) -> None:
    """Send ``sig`` to ``process`` and check that the fleet below it is gone afterwards."""
    children, ports = fleet_tree(process.pid)
    assert any("redis-server" in " ".join(c.cmdline()) for c in children), "no Redis seen"
    assert ports, "no listening port seen"
    try:
        process.send_signal(sig)
        code = process.wait(GRACE + 90)
        if expected_code is not None:
            assert code == expected_code, log.read_text(errors="replace")
        # SIGKILL: the children notice on their own; otherwise the parent stopped them
        assert_all_gone(children, ports, timeout=GRACE + 60 if sig == signal.SIGKILL else 5)
    finally:
        if process.poll() is None:
            process.kill()
        kill_tree(children)


@pytest.mark.timeout(400)
@pytest.mark.parametrize(
    "sig",
    _matrix(
        [signal.SIGTERM, signal.SIGKILL],
        [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL],
    ),
    ids=lambda sig: sig.name,
)
def test_main_once_stopped_mid_cycle_leaves_nothing_behind(
    sig: signal.Signals, tmp_path: Path
) -> None:
    config = write_config(tmp_path)
    command = [sys.executable, str(REPO_ROOT / "main.py"), "--once", "--config", str(config)]
    process, log = start(command, tmp_path)
    wait_for(log, process, ["symbols submitted"], timeout=240)
    expected = None if sig == signal.SIGKILL else 128 + sig
    signal_and_check(process, log, sig, expected)
    if sig != signal.SIGKILL:
        assert f"{sig.name}: stopping the fleet" in log.read_text()


@pytest.mark.timeout(400)
@pytest.mark.parametrize(
    "sig",
    _matrix([signal.SIGKILL], [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL]),
    ids=lambda sig: sig.name,
)
def test_up_stopped_leaves_nothing_behind(sig: signal.Signals, tmp_path: Path) -> None:
    config = write_config(tmp_path)
    command = [sys.executable, "-m", "workers.cli", "up", "--config", str(config)]
    process, log = start(command, tmp_path)
    wanted = [f"[health] {q}: answered by" for q in ("high", "medium", "low")]
    wait_for(log, process, wanted, timeout=240)
    signal_and_check(process, log, sig, None if sig == signal.SIGKILL else 0)


#: Runs one fleet worker (loading the test tasks) through :class:`workers.fleet.Fleet`, gives
#: it a task that sleeps 3 s, and stops the fleet once the task has started.
WARM_DRIVER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from core.config_loader import load_config
    from workers import runtime
    from workers.fleet import Fleet, ProcessSpec, fleet_specs

    path, state = Path(sys.argv[1]), Path(sys.argv[2])
    config = load_config(path)
    (worker,) = [s for s in fleet_specs(config, state, services=False) if s.name == "worker-low"]
    spec = ProcessSpec(worker.name, [*worker.argv, "-I", "tests.integration.slow_tasks"])
    fleet = Fleet(config, path, state_dir=state, specs=[spec])
    fleet.start()
    try:
        assert fleet.wait_until_ready(timeout=120), "the worker did not answer"
        from workers.app import app

        kwargs = {"key": "warm", "label": "slow", "seconds": 3.0}
        app.send_task("test.record", kwargs=kwargs, queue="low")
        client, prefix = runtime.redis_client(), runtime.keyspace().prefix
        while not client.lrange(prefix + "warm:started", 0, -1):
            time.sleep(0.05)
    finally:
        fleet.stop()
    """
)


@pytest.mark.timeout(300)
def test_stopping_the_fleet_lets_a_running_task_finish(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "monitoring: {prometheus_port: 0}\n"
        "celery: {shutdown_grace_seconds: 30, worker_concurrency: 1}\n"
    )
    env = operator_env() | {
        "REDIS_URL": redis_url,
        "CRYPTO_AI__REDIS__KEY_PREFIX": namespace,
    }
    done = subprocess.run(
        [sys.executable, "-c", WARM_DRIVER, str(config), str(tmp_path / "state")],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    started = list(redis_client.lrange(f"{namespace}warm:started", 0, -1))  # type: ignore[arg-type]
    finished = list(redis_client.lrange(f"{namespace}warm", 0, -1))  # type: ignore[arg-type]
    assert len(started) == 1, output
    assert finished == started, f"the running task did not finish:\n{output}"
    assert "WorkerLostError" not in output, output
    assert "did not stop within" not in output, output
