"""Every supported exchange has every part the recipe (docs/EXCHANGES.md) asks for.

A sixth exchange is added by adding its ccxt id to ``exchanges.profiles.SUPPORTED``; this
test then lists what it still lacks.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from exchanges.batching import NOT_BATCHED, RULES
from exchanges.profiles import SUPPORTED, profile
from ratelimit.tables import DEFAULT_TABLES
from sandbox.dialects import dialect_for

ROOT = Path(__file__).resolve().parents[2]


def missing_parts(ccxt_id: str) -> list[str]:
    """Return what ``ccxt_id`` lacks, one line each."""
    return table_lacks(ccxt_id) + profile_lacks(ccxt_id) + other_lacks(ccxt_id)


def table_lacks(ccxt_id: str) -> list[str]:
    """Return what the exchange's limit table lacks."""
    lacks = []
    limits = importlib.import_module(f"ratelimit.exchange_limits.{ccxt_id}")
    if "http" not in (limits.__doc__ or ""):
        lacks.append("its limit table cites no source (a URL of the exchange's docs)")
    table = DEFAULT_TABLES.get(ccxt_id)
    if table is None:
        lacks.append("no limit table in DEFAULT_TABLES")
    else:
        paths = [s for s in table.scopes if " /" in s]
        if not paths:
            lacks.append("its table scopes no request by METHOD /path (all fall to public)")
        if not any(s.split(" ")[0] in ("POST", "DELETE") for s in table.order_scopes):
            lacks.append("no order-placing path among its order scopes (orders must fail closed)")
    return lacks


def profile_lacks(ccxt_id: str) -> list[str]:
    """Return what the exchange's profile lacks."""
    lacks = []
    rules = profile(ccxt_id)
    if rules.missing:
        lacks.append(f"its profile says: {rules.missing}")
    cid = rules.new_client_order_id()
    if not re.match(rules.client_order_pattern, cid):
        lacks.append(f"its client order ids do not fit its pattern: {cid}")
    if not rules.lookup(cid):
        lacks.append("no fetch_order params to find an order by client order id")
    if rules.throttled(429, {"Retry-After": "3"}, "") is None and ccxt_id != "kraken":
        lacks.append("a 429 is not read as over the limit")
    return lacks


def other_lacks(ccxt_id: str) -> list[str]:
    """Return what the dialect, the batching rule and the user page lack."""
    lacks = []
    try:
        dialect_for(ccxt_id)
    except (ImportError, AttributeError, ValueError) as exc:
        lacks.append(f"no sandbox dialect: {exc}")
    if ccxt_id not in RULES and ccxt_id not in NOT_BATCHED:
        lacks.append("neither a batching rule nor a stated reason for none")
    if not (ROOT / "docs" / "exchanges" / f"{ccxt_id}.md").exists():
        lacks.append(f"no docs/exchanges/{ccxt_id}.md")
    return lacks


@pytest.mark.parametrize("ccxt_id", SUPPORTED)
def test_every_supported_exchange_has_every_part(ccxt_id: str) -> None:
    lacks = missing_parts(ccxt_id)
    assert not lacks, f"{ccxt_id} lacks:\n  " + "\n  ".join(lacks)
