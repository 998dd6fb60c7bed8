"""Deterministic client order ids: the same decision always names the same order."""

from __future__ import annotations

import hashlib


def client_order_id(run_id: str, exchange: str, symbol: str, action: str) -> str:
    """Return a Binance-safe id (``cai-`` + 28 hex chars) derived from the decision.

    A redelivered execution task computes the same id, so the exchange (which refuses a
    duplicate id among open orders) and our lookup-by-id reconciliation both see one order.
    """
    digest = hashlib.sha256(f"{run_id}|{exchange}|{symbol}|{action}".encode()).hexdigest()
    return f"cai-{digest[:28]}"
