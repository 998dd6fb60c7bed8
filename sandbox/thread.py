"""Run a sandbox in a background thread of this process (tests, benchmarks, embedding)."""

from __future__ import annotations

import asyncio
import threading

from aiohttp import web

from sandbox.server import Sandbox


class AppThread:
    """Serve an aiohttp application on its own event loop in a background thread."""

    def __init__(self, app: web.Application, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(app, access_log=None)
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        """Return the base URL, e.g. ``http://127.0.0.1:8901``."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> AppThread:
        """Start serving and return self once the port is bound."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(15)
        return self

    async def _start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])

    def stop(self) -> None:
        """Stop serving and end the thread."""
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(15)


class SandboxThread(AppThread):
    """Run a sandbox exchange in a background thread (tests, benchmarks, embedding)."""

    def __init__(self, sandbox: Sandbox, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(sandbox.app, host, port)
        self.sandbox = sandbox

    def start(self) -> SandboxThread:
        """Start serving and return self once the port is bound."""
        super().start()
        return self
