"""The sandbox's dialects, one module per exchange wire format, by ccxt id."""

from __future__ import annotations

import importlib

from sandbox.dialects.base import Dialect

#: ccxt id -> the module (``sandbox/dialects/<id>.py``) and class of its dialect.
DIALECTS: dict[str, str] = {
    "binance": "Binance",
    "okx": "Okx",
    "kraken": "Kraken",
    "coinbase": "Coinbase",
    "htx": "Htx",
}


def dialect_for(name: str) -> type[Dialect]:
    """Return the dialect class of a ccxt id; raise ValueError naming the known ones."""
    if name not in DIALECTS:
        known = ", ".join(sorted(DIALECTS))
        raise ValueError(f"the sandbox has no dialect {name!r}; it speaks: {known}")
    module = importlib.import_module(f"sandbox.dialects.{name}")
    found: type[Dialect] = getattr(module, DIALECTS[name])
    return found
