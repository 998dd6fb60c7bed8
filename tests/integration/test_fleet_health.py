"""The fleet's health rounds (``make run`` / ``crypto-ai up``) start once every worker is ready.

The fleet's own supervisor (:class:`workers.fleet.Fleet`) runs one real worker whose start
is held back by a few seconds, as on a slow or loaded machine, and the real Redis of the
tests. The first health round must come after the worker's ready line and be answered on
every queue, however long the worker took to start, and before the first analysis run is
sent (whose tasks its pings would otherwise queue behind).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import redis

from tests.integration.test_shutdown import operator_env
from tests.integration.workers import REPO_ROOT

pytestmark = pytest.mark.integration

#: Seconds the worker's start is held back: longer than the old fixed 5 s before the first
#: round plus its 10 s wait for an answer, once the worker's own start-up is added.
LATE_START = 14
SENT = "[fleet] first analysis run sent; decisions follow as they are made"

#: Runs the fleet's worker-low (high, medium and low) started late and the first analysis
#: run as ``run_fleet`` does, prints every line the fleet echoes, and stops the fleet once
#: that run is sent (or after 90 s).
DRIVER = textwrap.dedent(
    """
    import sys, threading
    from pathlib import Path
    from core.config_loader import load_config
    from workers.fleet import Fleet, ProcessSpec, fleet_specs

    path, state, late = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    config = load_config(path)
    (worker,) = [s for s in fleet_specs(config, state, services=False) if s.name == "worker-low"]
    held_back = (
        "import os, sys, time; time.sleep(float(sys.argv[1])); "
        "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])"
    )
    argv = [worker.argv[0], "-c", held_back, late, *worker.argv[1:]]

    lock = threading.Lock()

    def echo(name, line):
        with lock:  # one whole line each: every process is pumped by its own thread
            sys.stdout.write(f"[{name}] {line}\\n")
            sys.stdout.flush()
        if name == "fleet" and line.startswith("first analysis run sent"):
            fleet.request_stop()

    fleet = Fleet(config, path, state_dir=state, echo=echo, specs=[ProcessSpec(worker.name, argv)])
    timer = threading.Timer(90, fleet.request_stop)
    timer.daemon = True
    timer.start()
    fleet.start()
    try:
        threading.Thread(target=fleet.first_analysis, daemon=True).start()  # as run_fleet
        fleet.wait(health_every=600)
    finally:
        fleet.stop(grace=10)
    """
)


@pytest.mark.timeout(180)
def test_the_first_health_round_waits_for_a_late_worker_and_is_answered(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with socket.socket() as sock:  # an exchange nobody serves: the run's tasks go nowhere
        sock.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = tmp_path / "config.yaml"
    config.write_text(
        "monitoring: {prometheus_port: 0}\n"
        f"reports: {{dir: '{tmp_path / 'reports'}'}}\n"
        f"exchanges: {{binance: {{base_url: '{nowhere}'}}}}\n"
        "watchlist: [{exchange: binance, symbols: [BTC/USDT]}]\n"
    )
    env = operator_env() | {"REDIS_URL": redis_url, "CRYPTO_AI__REDIS__KEY_PREFIX": namespace}
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, str(config), str(tmp_path / "state"), str(LATE_START)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
    )
    lines = (done.stdout + done.stderr).splitlines()
    text = "\n".join(lines)
    ready = [i for i, line in enumerate(lines) if " ready: queues high,medium,low" in line]
    health = [(i, line) for i, line in enumerate(lines) if line.startswith("[health] ")]
    sent = [i for i, line in enumerate(lines) if line == SENT]
    assert done.returncode == 0, text
    assert ready and sent and len(health) == 3, text
    assert ready[0] < health[0][0] and health[-1][0] < sent[0], text
    for queue, (_, line) in zip(("high", "medium", "low"), health, strict=True):
        assert line.startswith(f"[health] {queue}: answered by low@"), text
