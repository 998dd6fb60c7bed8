"""What reconciliation's index and drift checks make of the fleet's records (pure)."""

from __future__ import annotations

from typing import Any

from resilience.ledger import Position
from tasks import reconcile_drift as drift
from tasks.reconcile_index import Known, from_audit, legs_from_audit, merge


def audit(endpoint: str, cid: str, outcome: str = "exchange") -> dict[str, str]:
    return {
        "exchange": "binance",
        "endpoint": endpoint,
        "symbol": "ETH/USDT",
        "side": "sell",
        "client_order_id": cid,
        "mode": "sandbox",
        "outcome": outcome,
        "status": "",
    }


def claim(order: dict[str, Any]) -> dict[str, Any]:
    return {"state": "settled", "answer": {"order": order}}


def test_an_order_lists_audit_entry_indexes_its_legs_and_never_follows_them() -> None:
    listed = {
        "listClientOrderId": "cai-list",
        "orders": [
            {"symbol": "ETHUSDT", "orderId": 7, "clientOrderId": "cai-sl"},
            {"symbol": "ETHUSDT", "orderId": 8, "clientOrderId": "cai-tp"},
        ],
    }
    entry = audit("POST /api/v3/orderList/oco", "cai-list")
    legs = legs_from_audit(entry, "binance", claim(listed))
    assert from_audit(entry, "binance", claim(listed)) is None, "a list is no order"
    assert [(k.cid, k.id, k.symbol, k.list_cid) for k in legs] == [
        ("cai-sl", "7", "ETH/USDT", "cai-list"),
        ("cai-tp", "8", "ETH/USDT", "cai-list"),
    ]
    assert not any(k.followed for k in legs)
    assert legs_from_audit({**entry, "outcome": "refused"}, "binance", claim(listed)) == []
    assert legs_from_audit({**entry, "mode": "paper"}, "binance", claim(listed)) == []


def test_a_gate_orders_audit_entry_keeps_what_the_exchange_said_it_filled() -> None:
    order = {"id": "5", "clientOrderId": "cai-buy", "status": "closed", "side": "buy"}
    known = from_audit(audit("create_order", "cai-buy"), "binance", claim({**order, "filled": 2}))
    assert known is not None and known.filled == 2.0 and known.final


def test_merging_keeps_the_list_and_the_exchanges_word_on_the_fill() -> None:
    leg = Known("cai-tp", "ETH/USDT", "sell", "open", "8", None, "cai-list")
    answered = merge(
        leg, Known("cai-tp", "ETH/USDT", "sell", "closed", "8", 0.5), exchange_said=True
    )
    assert (answered.status, answered.filled, answered.list_cid) == ("closed", 0.5, "cai-list")
    late = merge(answered, Known("cai-tp", "ETH/USDT", "sell", "open", "8", 0.2))
    assert (late.status, late.filled) == ("closed", 0.5), "an older answer changes nothing"
    said = merge(
        answered, Known("cai-tp", "ETH/USDT", "sell", "closed", "8", 0.4), exchange_said=True
    )
    assert said.filled == 0.4


def test_a_ledger_fill_is_asked_about_until_the_exchange_has_answered_for_it() -> None:
    assert drift.unconfirmed(None, 1.0)
    assert drift.unconfirmed(Known("c", "S", "buy", "closed"), 1.0), "no fill was said"
    assert not drift.unconfirmed(Known("c", "S", "buy", "closed", filled=1.0), 1.0)
    # the exchange's last word (missing, or final with less) is not asked again: it is drift
    missing = Known("c", "S", "", "missing", filled=0.0)
    assert not drift.unconfirmed(missing, 1.0) and drift.differs(1.0, missing.filled)
    assert drift.unconfirmed(Known("c", "S", "buy", "open", filled=0.5), 1.0)
    assert not drift.differs(1.0, 1.0) and not drift.differs(1.0, 1.5)


def test_balance_drift_counts_live_positions_per_asset_and_not_paper_ones() -> None:
    positions = [
        Position("binance", "SOL/USDT", "long", 2.0, 100.0, mode="sandbox"),
        Position("binance", "SOL/BTC", "long", 1.0, 0.001, mode="sandbox"),
        Position("binance", "ETH/USDT", "long", 5.0, 3000.0, mode="paper"),
    ]
    (item,) = drift.balances("binance", positions, {"SOL": 1.0, "ETH": 0.0})
    assert item == {
        "kind": "balance",
        "exchange": "binance",
        "symbol": "SOL/BTC,SOL/USDT",
        "client_order_id": "",
        "what": "the ledger holds 3 SOL, the account 1",
        "applied": False,
        "asset": "SOL",
        "ledger": 3.0,
        "balance": 1.0,
        "short": 2.0,
    }
    assert drift.balances("binance", positions, {"SOL": 2.9999}) == [], "within the tolerance"
