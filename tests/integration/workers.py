"""Start real ``celery -A workers worker`` processes for tests, and stop them for sure."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import Celery

import celeryconfig
from core.config_loader import load_config

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class WorkerProcess:
    """A worker subprocess in its own process group, with its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the worker logs that it is ready to consume."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "ready." in self.log.read_text(errors="replace"):
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited:\n{self.log.read_text()}")
            time.sleep(0.1)
        raise TimeoutError(f"worker {self.name} not ready:\n{self.log.read_text()}")

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes, as a crash or OOM kill would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        """Stop the worker gracefully, then for sure."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(15)
        self.kill()


@dataclass
class WorkerFleet:
    """Start test workers against one Redis and one key namespace; stop them all at the end."""

    redis_url: str
    namespace: str
    tmp: Path
    overrides: dict[str, str] = field(default_factory=dict)
    workers: list[WorkerProcess] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        """Return the environment a test worker (and the test's client app) runs with."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTO_AI")}
        config = self.tmp / "config.yaml"
        if not config.exists():
            config.write_text("{}\n")
        env.update(
            {
                "REDIS_URL": self.redis_url,
                "CRYPTO_AI_CONFIG": str(config),
                "CRYPTO_AI__REDIS__KEY_PREFIX": self.namespace,
                "PYTHONPATH": str(REPO_ROOT),
            }
        )
        env.update(self.overrides)
        return env

    def start(
        self,
        name: str,
        queues: str = "high,medium,low",
        concurrency: int = 1,
        ready: bool = True,
        *,
        imports: tuple[str, ...] = (),
    ) -> WorkerProcess:
        """Start ``celery -A workers worker`` consuming ``queues``; wait until it is ready.

        ``imports``: test task modules loaded besides ``tests.integration.slow_tasks``.
        """
        log = self.tmp / f"{name}.log"
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers",
            "worker",
            "-Q",
            queues,
            "-n",
            f"{name}@%h",
            "-c",
            str(concurrency),
            "-I",
            ",".join(("tests.integration.slow_tasks", *imports)),
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
        ]
        with log.open("wb") as out:
            process = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = WorkerProcess(name, process, log)
        self.workers.append(worker)
        if ready:
            worker.wait_ready()
        return worker

    def client_app(self) -> Celery:
        """Return a Celery app configured exactly as the workers are, for sending tasks."""
        config = load_config(env=self.env())
        app = Celery("crypto_ai_test_client", set_as_current=False)
        app.config_from_object(celeryconfig.celery_settings(config, self.redis_url))
        return app

    def stop_all(self) -> None:
        """Stop every worker this fleet started."""
        for worker in self.workers:
            worker.stop()


@contextlib.contextmanager
def worker_fleet(
    redis_url: str, namespace: str, tmp: Path, *, config: Path | None = None, **overrides: Any
) -> Iterator[WorkerFleet]:
    """Yield a :class:`WorkerFleet`; every worker is stopped when the block ends.

    ``config``: a config file the workers run with (copied to where they read it).
    """
    if config is not None and config.resolve() != (tmp / "config.yaml").resolve():
        (tmp / "config.yaml").write_text(config.read_text())
    fleet = WorkerFleet(redis_url, namespace, tmp, {k: str(v) for k, v in overrides.items()})
    try:
        yield fleet
    finally:
        fleet.stop_all()
