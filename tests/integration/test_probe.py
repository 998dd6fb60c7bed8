"""``python -m workers.probe``, the containers' health probes, against real processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.workers import REPO_ROOT, worker_fleet
from workers.probe import run


def probe(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the probe as a container runtime would; return its exit code and output."""
    return subprocess.run(
        [sys.executable, "-m", "workers.probe", "--timeout", "3", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def dead_redis_url() -> str:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    return f"redis://:s3cret-pw@127.0.0.1:{port}/0"  # nothing listens there any more


def test_worker_probe_passes_for_a_running_worker_and_fails_for_an_absent_one(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    with worker_fleet(redis_url, namespace, tmp_path) as fleet:
        fleet.start("probed", queues="low")
        alive = probe(fleet.env(), "worker", "--node", "probed@%h")
        with pytest.MonkeyPatch.context() as env:
            for key, value in fleet.env().items():
                env.setenv(key, value)
            absent = run(["--timeout", "2", "worker", "--node", "gone@%h"])
    assert alive.returncode == 0, alive.stdout + alive.stderr
    assert alive.stdout.startswith(f"ok: worker probed@{socket.gethostname()} answers")
    assert absent == (
        1,
        f"unhealthy: worker gone@{socket.gethostname()} did not answer a ping within 2s",
    )


def test_probes_fail_in_one_line_without_the_password_when_redis_is_dead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "config.yaml").write_text("{}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTO_AI")}
    env.update(REDIS_URL=dead_redis_url(), CRYPTO_AI_CONFIG=str(tmp_path / "config.yaml"))
    result = probe(env, "worker", "--node", "w@%h")
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert len(result.stdout.splitlines()) == 1, result.stdout
    assert result.stdout.startswith("unhealthy: redis at redis://:***@127.0.0.1:"), result.stdout
    assert "s3cret-pw" not in result.stdout + result.stderr
    assert result.stderr == ""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for args in (["redis"], ["beat", "--schedule", "/nowhere"]):
        code, line = run(args)
        assert code == 1 and line.startswith("unhealthy: redis at redis://"), (args, line)


def test_beat_probe_follows_the_schedule_file_age(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "config.yaml").write_text("{}\n")
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("CRYPTO_AI_CONFIG", str(tmp_path / "config.yaml"))
    schedule = str(tmp_path / "beat-schedule")
    never = run(["beat", "--schedule", schedule])
    assert never == (1, f"unhealthy: beat has not written its schedule {schedule}")
    (tmp_path / "beat-schedule.db").write_bytes(b"")  # the suffix the dbm backend adds
    assert run(["beat", "--schedule", schedule, "--max-age", "60"])[0] == 0
    old = time.time() - 120
    os.utime(tmp_path / "beat-schedule.db", (old, old))
    code, line = run(["beat", "--schedule", schedule, "--max-age", "60"])
    assert code == 1 and "old (more than 60s)" in line, line


def test_flower_serves_behind_basic_auth_and_its_healthcheck_answers_the_probe(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with worker_fleet(redis_url, namespace, tmp_path) as fleet:
        env = fleet.env() | {
            "FLOWER_BASIC_AUTH": "ops:pw",
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        }
        flower = subprocess.Popen(
            ["sh", "deploy/start-flower.sh", "--address=127.0.0.1", f"--port={port}"],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 30
            health = run(["http", f"http://127.0.0.1:{port}/healthcheck"])
            while health[0] != 0 and time.monotonic() < deadline and flower.poll() is None:
                time.sleep(0.2)
                health = run(["http", f"http://127.0.0.1:{port}/healthcheck"])
            dashboard = run(["http", f"http://127.0.0.1:{port}/"])
        finally:
            os.killpg(flower.pid, 15)
            flower.wait(15)
    assert health == (0, f"ok: http://127.0.0.1:{port}/healthcheck answers 200")
    assert dashboard[0] == 1 and "401" in dashboard[1], dashboard
