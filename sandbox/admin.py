"""A small client for the sandbox's admin endpoints (stats, faults, price), for tests."""

from __future__ import annotations

import json
import urllib.request
from typing import Any


def admin(url: str, path: str, method: str = "GET", body: Any = None) -> Any:
    """Call ``/sandbox/<path>`` on the sandbox at ``url`` and return its JSON."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(  # noqa: S310 - the caller's sandbox URL
        f"{url}/sandbox/{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - sandbox URL
        return json.loads(response.read())


def set_price(url: str, symbol: str, price: float) -> Any:
    """Move ``symbol``'s last trade price to ``price`` now (fires the stops it crosses)."""
    return admin(url, "price", "PUT", {"symbol": symbol, "price": price})
