"""High-priority queue wait behind a 10,000-task low-priority backlog, ours vs Celery defaults.

A worker (prefork, 2 processes) consumes ``high,medium,low``; 10,000 low tasks of 20 ms wait
in the queue; then 40 high tasks are sent, one every 0.25 s, and each records how long it
waited from being sent to starting. Baseline in the same run: the same worker with Celery's
default settings (prefetch 4, early acks, round-robin queue order).

Run: ``python -m bench.priority_wait [--backlog 10000] [--high 40]``
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from bench.common import redis_for_bench

REPO = Path(__file__).resolve().parents[1]


def _worker(app_module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        app_module,
        "worker",
        "-Q",
        "high,medium,low",
        "-c",
        "2",
        "-I",
        "bench.priority_tasks",
        "--loglevel",
        "WARNING",
        "--without-gossip",
        "--without-mingle",
    ]
    with log.open("wb") as out:
        return subprocess.Popen(
            command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def measure(
    app: Celery, app_module: str, url: str, args: argparse.Namespace, tmp: Path
) -> list[float]:
    """Return the waits (seconds) of the high tasks under a low backlog."""
    client = redis.Redis.from_url(url)
    client.flushdb()
    with app.producer_or_acquire() as producer:
        for _ in range(args.backlog):
            app.send_task("bench.busy", args=[0.02], queue="low", producer=producer)
    env = {**os.environ, "BENCH_REDIS_URL": url, "REDIS_URL": url, "PYTHONPATH": str(REPO)}
    config = tmp / "empty.yaml"
    config.write_text("{}\n")
    env["CRYPTO_AI_CONFIG"] = str(config)
    worker = _worker(app_module, env, tmp / f"{app_module}.log")
    try:
        time.sleep(4.0)  # the worker starts and is busy with the backlog
        for _ in range(args.high):
            app.send_task("bench.mark", args=[time.time()], queue="high")
            time.sleep(0.25)
        deadline = time.time() + 120
        while client.llen("bench:waits") < args.high and time.time() < deadline:
            time.sleep(0.1)
        return [float(x) for x in client.lrange("bench:waits", 0, -1)]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        client.flushdb()


def _summary(waits: list[float], expected: int) -> dict[str, Any]:
    if len(waits) < 2:
        return {"done": len(waits), "p50": float("nan"), "p99": float("nan")}
    cuts = statistics.quantiles(waits, n=100, method="inclusive")
    return {"done": len(waits), "p50": statistics.median(waits), "p99": cuts[98]}


def main() -> None:
    """Measure ours and the Celery-default baseline; print p50/p99 waits."""
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backlog", type=int, default=10_000)
    parser.add_argument("--high", type=int, default=40)
    args = parser.parse_args()
    with redis_for_bench() as url, tempfile.TemporaryDirectory() as tmp:
        os.environ["BENCH_REDIS_URL"] = url
        import celeryconfig
        from core.config import AppConfig

        ours = Celery("bench_ours", set_as_current=False)
        ours.config_from_object(celeryconfig.celery_settings(AppConfig(), url))
        default = Celery("bench_default_sender", broker=url, set_as_current=False)
        rows = {
            "ours (prefetch 1, acks late, priority order)": _summary(
                measure(ours, "workers", url, args, Path(tmp)), args.high
            ),
            "Celery defaults (prefetch 4, round robin)": _summary(
                measure(default, "bench.default_app", url, args, Path(tmp)), args.high
            ),
        }
    print(
        f"{args.high} high-priority tasks sent behind {args.backlog} low tasks of 20 ms, "
        "worker with 2 processes"
    )
    print(f"{'settings':46} {'done':>5} {'p50 wait':>10} {'p99 wait':>10}")
    for name, r in rows.items():
        print(f"{name:46} {r['done']:5d} {r['p50'] * 1000:8.1f}ms {r['p99'] * 1000:8.1f}ms")


if __name__ == "__main__":
    main()
