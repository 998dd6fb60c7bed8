"""Start sandboxes for tests and talk to them with unmodified ccxt over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from core.config import ExchangeConfig, SandboxConfig
from exchanges.ccxt_factory import make_exchange
from sandbox.admin import admin
from sandbox.server import Sandbox
from sandbox.thread import SandboxThread

__all__ = ["admin", "ccxt_client", "running_sandbox"]


@contextmanager
def running_sandbox(dialect: str = "binance", **settings: Any) -> Iterator[SandboxThread]:
    """Yield a started sandbox of a dialect (history kept short so tests start fast)."""
    settings.setdefault("history_days", 2)
    sandbox = Sandbox(SandboxConfig.model_validate(settings), name=dialect, dialect=dialect)
    thread = SandboxThread(sandbox).start()
    try:
        yield thread
    finally:
        thread.stop()


def ccxt_client(url: str, secret: str = "c2FuZGJveC1zZWNyZXRz", **extra: Any) -> Any:
    """Return ccxt.async_support.binance with its URLs at the sandbox."""
    config = ExchangeConfig(base_url=url, api_key="sandbox-key", api_secret=secret)
    return make_exchange("binance", config, **extra)
