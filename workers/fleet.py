"""Run the whole fleet on one machine: Redis (embedded if none is configured), a worker per
priority tier, beat and Flower, with their logs in one terminal and a clean Ctrl-C.

Stopping: a stop signal (SIGINT, SIGTERM, SIGHUP) to ``crypto-ai up`` or ``--once`` stops
every process in order (:meth:`Fleet.stop`); on Linux every child also gets SIGTERM when the
fleet's process is killed outright (:mod:`workers.deathsig`).

Tiers: ``worker-high`` consumes ``high``; ``worker-medium`` consumes ``high,medium``;
``worker-low`` consumes ``high,medium,low``. Every worker drains higher queues first, so a
high-priority task never waits behind lower tiers, and idle capacity helps upward.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import PRIORITY_QUEUES, AppConfig
from core.errors import ConfigError
from core.redis_target import external_redis_url, redact_url
from core.urls import local_port
from workers import deathsig, runtime
from workers.orphan import ORPHAN_GRACE_ENV, ORPHAN_PARENT_ENV
from workers.redis_server import EmbeddedRedis, running_embedded
from workers.stop_signals import Interrupted, OnceStopper, stop_signals

log = logging.getLogger(__name__)

_TIERS = {"high": "high", "medium": "high,medium", "low": "high,medium,low"}
#: Seconds a sandbox has to exit on SIGTERM before its process group is killed.
SANDBOX_GRACE = 10.0
#: The line a worker prints once it consumes (``ready_line`` in ``workers/app.py``).
READY_LINE = re.compile(r"^crypto-ai worker (?P<node>\S+) ready: ")
#: How long the health rounds wait for every worker's ready line before probing anyway.
READY_WAIT = 120.0


@dataclass(frozen=True)
class ProcessSpec:
    """One process of the fleet: a name for its log lines and its command line."""

    name: str
    argv: list[str]


def sandbox_port(base_url: str | None) -> int | None:
    """Return the port of a base_url that points at this machine, else None."""
    return local_port(base_url)


def fleet_specs(
    config: AppConfig, state_dir: Path, python: str = sys.executable, *, services: bool = True
) -> list[ProcessSpec]:
    """Return the processes ``crypto-ai up`` starts (``services``: beat and Flower too)."""
    celery = [python, "-m", "celery", "-A", "workers"]
    sandboxes = [
        ProcessSpec(f"sandbox-{key}", [python, "-m", "workers.cli", "sandbox", "--exchange", key])
        for key, exchange in config.exchanges.items()
        # is_sandbox: false on a local URL is a real exchange (a proxy, another emulator)
        if exchange.enabled and exchange.sandboxed and sandbox_port(exchange.base_url) is not None
    ]
    level = config.monitoring.log_level
    concurrency = str(config.celery.worker_concurrency or 2)
    specs = sandboxes + [
        ProcessSpec(
            f"worker-{tier}",
            [
                *celery,
                "worker",
                "-Q",
                queues,
                "-n",
                f"{tier}@%h",
                "-c",
                concurrency,
                "--loglevel",
                level,
            ],
        )
        for tier, queues in _TIERS.items()
    ]
    for exchange in config.celery.dedicated_exchanges:
        queues = ",".join(f"{exchange}.{tier}" for tier in PRIORITY_QUEUES)
        specs.append(
            ProcessSpec(
                f"worker-{exchange}",
                [
                    *celery,
                    "worker",
                    "-Q",
                    queues,
                    "-n",
                    f"{exchange}@%h",
                    "-c",
                    concurrency,
                    "--loglevel",
                    level,
                ],
            )
        )
    if not services:
        return specs
    specs.append(
        ProcessSpec(
            "beat",
            [*celery, "beat", "-s", str(state_dir / "beat-schedule"), "--loglevel", level],
        )
    )
    flower = config.monitoring.flower
    if flower.enabled:
        specs.append(
            ProcessSpec(
                "flower",
                [*celery, "flower", f"--address={flower.address}", f"--port={flower.port}"],
            )
        )
    return specs


class Fleet:
    """Start, watch and stop the fleet's processes."""

    def __init__(
        self,
        config: AppConfig,
        config_path: Path | None,
        *,
        state_dir: Path = Path(".crypto-ai"),
        echo: Callable[[str, str], None] | None = None,
        services: bool = True,
        specs: list[ProcessSpec] | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.state_dir = state_dir
        self.echo = echo or _print_line
        self.redis_url = ""
        self._embedded: EmbeddedRedis | None = None
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._stopping = threading.Event()
        self._ready: set[str] = set()
        self._probed = threading.Event()  # the first health round is over
        self.services = services
        self.specs = specs

    def start(self) -> None:
        """Resolve Redis (starting the embedded one if needed), then start every process."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.redis_url = self._start_redis()
        runtime.configure(self.config, self.redis_url)
        self._start_metrics()
        env = dict(os.environ)
        env["REDIS_URL"] = self.redis_url
        # a child orphaned by the fleet's death ends after the same grace (workers/orphan.py)
        env[ORPHAN_GRACE_ENV] = repr(self.config.celery.shutdown_grace_seconds)
        env[ORPHAN_PARENT_ENV] = str(os.getpid())
        if self.config_path is not None:
            env["CRYPTO_AI_CONFIG"] = str(self.config_path.resolve())
        if self.config.monitoring.flower.basic_auth is not None:
            # Flower reads it from the environment: never on a command line (ps shows those)
            env["FLOWER_BASIC_AUTH"] = self.config.monitoring.flower.basic_auth.get_secret_value()
        specs = self.specs or fleet_specs(self.config, self.state_dir, services=self.services)
        for spec in specs:
            if spec.name.startswith("sandbox-") and self._sandbox_already_served(spec.name[8:]):
                continue
            process = subprocess.Popen(
                deathsig.guarded(spec.argv),
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self._processes[spec.name] = process
            threading.Thread(target=self._pump, args=(spec.name, process), daemon=True).start()
        self.echo("fleet", f"started {', '.join(self._processes)} on {redact_url(self.redis_url)}")

    def _sandbox_already_served(self, key: str) -> bool:
        """Return True if our sandbox already answers at the exchange's URL; raise if another
        server holds the port (it must not silently get a second server, nor be traded as
        if it were the sandbox)."""
        url = str(self.config.exchanges[key].base_url)
        port = sandbox_port(url)
        with contextlib.closing(socket.socket()) as probe:
            probe.settimeout(1.0)
            if port is None or probe.connect_ex(("127.0.0.1", port)) != 0:
                return False  # nothing listens: start ours
        try:
            # base_url is validated as http(s) by the config
            with urllib.request.urlopen(f"{url}/sandbox/stats", timeout=3) as answer:  # noqa: S310
                json.loads(answer.read())["name"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                "the fleet's exchanges",
                [
                    (
                        f"exchanges.{key}.base_url",
                        f"{url} is served by something that is not the sandbox ({exc}); free "
                        "the port, or set is_sandbox: false to trade it as a real exchange",
                    )
                ],
            ) from None
        self.echo("fleet", f"using the sandbox already running at {url}")
        return True

    def _start_metrics(self) -> None:
        """Give every process one multiprocess metrics directory and serve the merged view."""
        directory = (self.state_dir / "metrics").resolve()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)  # before prometheus_client loads
        from monitoring import metrics

        metrics.prepare_directory(directory)
        port = self.config.monitoring.prometheus_port
        address = self.config.monitoring.prometheus_address
        if port:
            try:
                metrics.serve(port, address)
            except OSError as exc:  # the fleet runs without its scrape endpoint, and says so
                self.echo("fleet", f"metrics endpoint {address}:{port} unavailable: {exc}")
            else:
                self.echo("fleet", f"metrics on http://{address}:{port}/metrics")

    def _start_redis(self) -> str:
        url = external_redis_url(self.config.redis)
        if url is not None:
            return url
        directory = Path(self.config.redis.embedded.dir)
        running = running_embedded(directory)
        if running is not None:
            self.echo("fleet", f"using the embedded Redis already running at {running}")
            return running
        embedded = self.config.redis.embedded
        self._embedded = EmbeddedRedis(
            directory,
            appendonly=embedded.appendonly,
            appendfsync=embedded.appendfsync,
            die_with_parent=True,
        )
        url = self._embedded.start()
        self.echo("fleet", f"embedded Redis started at {url} (stops with the fleet)")
        return url

    def _pump(self, name: str, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip()
            if name.startswith("worker-") and READY_LINE.match(line):
                self._ready.add(name)
            self.echo(name, line)

    def unready_workers(self) -> list[str]:
        """Return the workers the fleet started that have not printed their ready line yet."""
        return [n for n in self._processes if n.startswith("worker-") and n not in self._ready]

    def exited(self) -> dict[str, int]:
        """Return the processes that have exited, with their exit codes."""
        return {name: code for name, p in self._processes.items() if (code := p.poll()) is not None}

    def request_stop(self) -> None:
        """Ask :meth:`wait` to return; safe to call from a signal handler."""
        self._stopping.set()

    def wait(self, health_every: float = 30.0) -> int:
        """Block until Ctrl-C or a process dies; return 0 for a requested stop, else 1.

        Health rounds (one ping per queue, echoed as ``[health]`` lines) start as soon as
        every worker has printed its ready line, then run every ``health_every`` seconds; a
        worker still not ready after :data:`READY_WAIT` seconds is named, and probed anyway.
        """
        waiting_since = time.monotonic()
        next_health: float | None = None
        seen: set[Path] = set(Path(self.config.reports.dir).glob("*/*.json"))
        while not self._stopping.wait(0.5):
            self._echo_decisions(seen)
            dead = self.exited()
            if dead:
                self.echo("fleet", f"stopping: {dead} exited unexpectedly")
                return 1
            if next_health is None:
                next_health = self._first_health(waiting_since)
            if next_health is not None and time.monotonic() >= next_health:
                threading.Thread(target=self._health_round, daemon=True).start()
                next_health = time.monotonic() + health_every
        return 0

    def _first_health(self, waiting_since: float) -> float | None:
        """Return when the first health round is due: now once every worker is ready."""
        unready = self.unready_workers()
        if not unready:
            return time.monotonic()
        if time.monotonic() - waiting_since < READY_WAIT:
            return None
        self.echo(
            "health",
            f"{', '.join(unready)} not ready after {READY_WAIT:.0f} s; probing the queues anyway",
        )
        return time.monotonic()

    def _echo_decisions(self, seen: set[Path]) -> None:
        for path in sorted(set(Path(self.config.reports.dir).glob("*/*.json")) - seen):
            seen.add(path)
            try:
                report = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            plan, execution = report["plan"], report["execution"]
            order = execution.get("order") or {}
            risk = "; ".join(execution.get("risk", {}).get("reasons", []))
            outcome = f"order {order.get('status')}" if order else f"no order ({risk})"
            self.echo(
                "decision",
                f"{report['exchange']} {report['symbol']}: "
                f"{plan['action'].upper()} by {plan['rung']}, {outcome} -> {path}",
            )

    def first_analysis(self) -> None:
        """Start an analysis run as soon as the workers answer, not one interval later.

        It waits for the first health round too (:meth:`wait` runs it once every worker is
        ready), so that round's pings do not queue behind the run's tasks.
        """
        entry = self.config.schedules.get("analysis")
        if entry is None or not entry.enabled or not self.config.watchlist:
            return
        if self.wait_until_ready(timeout=180):
            self._probed.wait(READY_WAIT)
            from workers.app import app

            app.send_task(entry.task, kwargs=dict(entry.kwargs), queue=entry.queue or "low")
            self.echo("fleet", "first analysis run sent; decisions follow as they are made")

    def wait_until_ready(self, timeout: float) -> bool:
        """Return True once a health task has round-tripped through every queue."""
        from workers.app import app

        deadline = time.monotonic() + timeout
        for queue in PRIORITY_QUEUES:
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or self.exited():
                    return False
                if _pinged(app, queue, min(5.0, left)):
                    break
        return True

    def _health_round(self) -> None:
        from workers.app import app

        for queue in PRIORITY_QUEUES:
            sent = time.time()
            try:
                answer = app.send_task("health.ping", kwargs={"sent_at": sent}, queue=queue).get(
                    timeout=10
                )
                self.echo(
                    "health",
                    f"{queue}: answered by {answer['worker']} "
                    f"in {(time.time() - sent) * 1000:.0f} ms",
                )
            except Exception as exc:
                self.echo("health", f"{queue}: no answer ({type(exc).__name__}: {exc})")
        self._probed.set()

    def stop(self, grace: float | None = None) -> None:
        """Stop every process: workers, beat and Flower, then the sandboxes, then Redis.

        Each worker gets SIGTERM on its main process only: Celery's warm shutdown, which
        takes no new task and lets the running ones finish. What still runs after ``grace``
        seconds (``celery.shutdown_grace_seconds`` by default) is killed with its whole
        process group (the pool). Sandboxes and the embedded Redis stop last, so that
        finishing tasks still reach the exchange and Redis.
        """
        grace = self.config.celery.shutdown_grace_seconds if grace is None else grace
        celery = {n: p for n, p in self._processes.items() if not n.startswith("sandbox-")}
        sandboxes = {n: p for n, p in self._processes.items() if n.startswith("sandbox-")}
        if celery:
            self.echo("fleet", f"stopping {', '.join(celery)} (up to {grace:.0f}s for tasks)")
        self._stop_processes(celery, grace)
        self._stop_processes(sandboxes, SANDBOX_GRACE)
        if self._embedded is not None:
            self._embedded.stop()
            self.echo("fleet", "embedded Redis stopped")
        self.echo("fleet", "all processes stopped")

    def _stop_processes(self, processes: dict[str, subprocess.Popen[bytes]], grace: float) -> None:
        """SIGTERM each main process, wait ``grace`` for all, then kill each process group."""
        for process in processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for name, process in processes.items():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.echo("fleet", f"{name} did not stop within {grace:.0f}s; killing it")
            # the group (pool processes, anything they started) goes even if the main exited
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


_print_lock = threading.Lock()


def _print_line(name: str, line: str) -> None:
    """Print ``[name] line`` whole: every process's output is pumped by its own thread."""
    with _print_lock:
        sys.stdout.write(f"[{name}] {line}\n")
        sys.stdout.flush()


def _pinged(app: Any, queue: str, timeout: float) -> bool:
    """Return True if a health task sent to ``queue`` was answered within ``timeout``."""
    from tasks.runs import release

    ping = None
    try:
        ping = app.send_task("health.ping", queue=queue)
        ping.get(timeout=timeout)
    except Exception:  # not ready: a worker is still starting
        return False
    finally:
        # an unanswered ping stays awaited; collected after Redis stopped, it would print
        # a traceback
        release(ping)
    return True


def run_fleet(config: AppConfig, config_path: Path | None) -> int:
    """Start the fleet, run until a stop signal or a failure, stop it; return an exit code."""
    fleet = Fleet(config, config_path)
    with stop_signals(lambda *_: fleet.request_stop()):
        try:
            try:
                fleet.start()
            except ConfigError as exc:  # e.g. a sandbox URL served by something else
                print(exc.render(), file=sys.stderr)
                return 2
            threading.Thread(target=fleet.first_analysis, daemon=True).start()
            return fleet.wait()
        finally:
            fleet.stop()


def run_once(config: AppConfig, config_path: Path | None, cycle: Callable[[], int]) -> int:
    """Start Redis, sandboxes and workers (no beat, no Flower), run ``cycle``, stop all.

    A stop signal ends the run early (exit code 128 + the signal's number) and still stops
    every process the run started.
    """
    fleet = Fleet(config, config_path, services=False, echo=lambda name, line: None)
    stopper = OnceStopper()
    with stop_signals(stopper):
        try:
            try:
                fleet.start()
            except ConfigError as exc:  # e.g. a sandbox URL served by something else
                print(exc.render(), file=sys.stderr)
                return 2
            stopper.arm()
            if not fleet.wait_until_ready(timeout=120):
                print("the workers did not answer within 120 s", file=sys.stderr)
                return 1
            return cycle()
        except Interrupted as exc:
            return 128 + exc.signum
        finally:
            stopper.disarm()
            gc.collect()  # result objects unsubscribe from Redis when collected: while it is up
            fleet.stop()
