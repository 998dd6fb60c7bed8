"""Point a ccxt exchange's API URLs at another host (a sandbox, a proxy, Binance's api1-4)."""

from __future__ import annotations

import re
from typing import Any

_ORIGIN = re.compile(r"^https?://[^/]+")


def rebase_urls(api: Any, base_url: str) -> Any:
    """Return ccxt's ``urls['api']`` with every URL's scheme and host replaced by ``base_url``.

    Paths are kept, so ``https://api.binance.com/api/v3`` becomes ``<base_url>/api/v3``.
    """
    base = base_url.rstrip("/")
    if isinstance(api, str):
        return _ORIGIN.sub(base, api)
    if isinstance(api, dict):
        return {key: rebase_urls(value, base) for key, value in api.items()}
    return api
