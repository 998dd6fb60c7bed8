"""Start sandboxes for tests and talk to them with unmodified ccxt over real HTTP."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from core.config import ExchangeConfig, SandboxConfig
from exchanges.ccxt_factory import make_exchange
from sandbox.server import Sandbox, SandboxThread


@contextmanager
def running_sandbox(**settings: Any) -> Iterator[SandboxThread]:
    """Yield a started sandbox (history kept short so tests start fast)."""
    settings.setdefault("history_days", 2)
    thread = SandboxThread(Sandbox(SandboxConfig.model_validate(settings))).start()
    try:
        yield thread
    finally:
        thread.stop()


def ccxt_client(url: str, secret: str = "sandbox-secret", **extra: Any) -> Any:
    """Return ccxt.async_support.binance with its URLs at the sandbox."""
    config = ExchangeConfig(base_url=url, api_key="sandbox-key", api_secret=secret)
    return make_exchange("binance", config, **extra)


def admin(url: str, path: str, method: str = "GET", body: Any = None) -> Any:
    """Call a /sandbox/ admin endpoint and return its JSON."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"{url}/sandbox/{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())
