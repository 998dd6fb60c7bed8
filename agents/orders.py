"""Deterministic client order ids: the same decision always names the same order."""

from __future__ import annotations

import hashlib


def client_order_id(run_id: str, exchange: str, symbol: str, action: str, length: int = 32) -> str:
    """Return an id derived from the decision: ``cai`` and hex digits, ``length`` in all.

    Letters and digits only, so it fits every supported exchange's client order id (OKX
    allows no hyphen; Kraken's free-text ids are at most 18 characters: its profile says so).

    A redelivered execution task computes the same id, so the exchange (which refuses a
    duplicate id among open orders) and our lookup-by-id reconciliation both see one order.
    """
    digest = hashlib.sha256(f"{run_id}|{exchange}|{symbol}|{action}".encode()).hexdigest()
    return f"cai{digest[: length - 3]}"
