"""The position ledger: average-cost arithmetic (pure), and exactly-once fills on real Redis."""

from __future__ import annotations

import asyncio
import threading

import pytest
import redis

from core.errors import OrderRefusedError
from core.keys import KeySpace
from resilience.ledger import Fill, Ledger, fill_from_order
from resilience.position import PlanRef, Position, Trade, fold


def folded(before: Position | None, side: str, amount: float, price: float, fee: float = 0.0):  # type: ignore[no-untyped-def]
    trade = Trade(side, amount, price, fee)  # type: ignore[arg-type]
    return fold(before, trade, exchange="x", symbol="BTC/USDT", at="t", cid=f"{side}{amount}")


def test_buy_buy_more_partial_sell_full_sell_by_average_cost_with_fees() -> None:
    first = folded(None, "buy", 1.0, 100.0, fee=0.1).position
    assert (first.side, first.amount, first.entry, first.fees) == ("long", 1.0, 100.0, 0.1)
    assert first.unrealized(110.0) == pytest.approx(10.0 - 0.1)
    more = folded(first, "buy", 1.0, 110.0, fee=0.11).position
    assert more.amount == 2.0 and more.entry == pytest.approx(105.0)
    assert more.open_fees == pytest.approx(0.21)
    half = folded(more, "sell", 0.5, 120.0, fee=0.06)
    # (120 - 105) * 0.5 - the sell's fee - a quarter of the entry fees
    assert half.realized == pytest.approx(7.5 - 0.06 - 0.0525)
    assert half.position.amount == 1.5 and half.position.entry == pytest.approx(105.0)
    assert half.closed is None
    rest = folded(half.position, "sell", 1.5, 100.0, fee=0.15)
    assert rest.realized == pytest.approx(-7.5 - 0.15 - 0.1575)
    assert rest.position.side == "flat" and not rest.position.open
    assert rest.closed is not None and rest.closed.realized_pnl == pytest.approx(
        half.realized + rest.realized
    )
    assert rest.closed.fees == pytest.approx(0.1 + 0.11 + 0.06 + 0.15)
    # the round trip: every fee paid, nothing unrealised left
    assert half.realized + rest.realized == pytest.approx(
        (120 * 0.5 + 100 * 1.5) - (100 + 110) - 0.42
    )


def test_spot_sells_never_short_and_a_base_fee_shrinks_what_a_buy_receives() -> None:
    nothing = folded(None, "sell", 1.0, 100.0)
    assert not nothing.position.open and nothing.dropped == 1.0
    bought = fold(
        None,
        Trade("buy", 1.0, 100.0, fee=0.1, base_fee=0.001),
        exchange="x",
        symbol="BTC/USDT",
        at="t",
        cid="c",
        plan=PlanRef("run-1", 97.0, 105.0, "4h"),
    ).position
    assert bought.amount == pytest.approx(0.999) and bought.entry == pytest.approx(100 / 0.999)
    assert bought.unrealized(100.0) == pytest.approx(-0.1)
    assert (bought.run_id, bought.stop_loss, bought.take_profit) == ("run-1", 97.0, 105.0)
    over = folded(bought, "sell", 2.0, 100.0)
    assert over.dropped == pytest.approx(1.001) and over.closed is not None


def fill(cid: str, side: str, filled: float, average: float, fee: float = 0.0) -> Fill:
    return Fill(cid, side, filled, average, fee)  # type: ignore[arg-type]


def test_the_same_fill_twice_counts_once_and_a_larger_fill_adds_the_difference(
    redis_client: redis.Redis, namespace: str
) -> None:
    ledger = Ledger(redis_client, KeySpace(namespace))
    first = ledger.apply_fill("binance", "BTC/USDT", fill("a", "buy", 0.5, 100.0, 0.05))
    again = ledger.apply_fill("binance", "BTC/USDT", fill("a", "buy", 0.5, 100.0, 0.05))
    assert first.applied and not again.applied
    grown = ledger.apply_fill("binance", "BTC/USDT", fill("a", "buy", 1.0, 101.0, 0.1))
    position = ledger.position("binance", "BTC/USDT")
    assert grown.applied and position is not None
    assert position.amount == pytest.approx(1.0) and position.entry == pytest.approx(101.0)
    assert position.fees == pytest.approx(0.1) and position.fills == ["a"]
    sold = ledger.apply_fill("binance", "BTC/USDT", fill("b", "sell", 1.0, 111.0, 0.1))
    assert sold.realized == pytest.approx(10.0 - 0.2)
    assert ledger.position("binance", "BTC/USDT") is None
    assert ledger.realized_today("binance") == pytest.approx(9.8)
    assert [p.realized_pnl for p in ledger.history("binance")] == [pytest.approx(9.8)]
    assert ledger.positions() == []


def test_two_concurrent_appliers_count_every_fill_once(
    redis_url: str, redis_client: redis.Redis, namespace: str
) -> None:
    keys = KeySpace(namespace)
    start = threading.Barrier(8)

    def worker(n: int) -> None:
        ledger = Ledger(redis.Redis.from_url(redis_url), keys)
        start.wait()
        for i in range(10):
            # every fill is applied by two threads at once
            ledger.apply_fill("binance", "ETH/USDT", fill(f"o{n // 2}-{i}", "buy", 0.1, 100.0))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    position = Ledger(redis_client, keys).position("binance", "ETH/USDT")
    assert position is not None and position.amount == pytest.approx(4.0)  # 40 fills of 0.1


def test_the_paper_wallet_moves_with_fills_and_refuses_what_it_cannot_pay(
    redis_client: redis.Redis, namespace: str
) -> None:
    ledger = Ledger(redis_client, KeySpace(namespace))
    wallet = {"USDT": 1000.0}

    async def scenario() -> None:
        await ledger.aapply_fill("p", "BTC/USDT", fill("a", "buy", 5.0, 100.0, 0.5), wallet=wallet)
        with pytest.raises(OrderRefusedError, match="paper wallet"):
            await ledger.aapply_fill(
                "p", "BTC/USDT", fill("b", "buy", 5.0, 100.0, 0.5), wallet=wallet
            )
        await ledger.aapply_fill("p", "BTC/USDT", fill("c", "sell", 2.0, 110.0, 0.2), wallet=wallet)
        await ledger.clients.aclose()

    asyncio.run(scenario())
    assert ledger.wallet("p") == {"USDT": pytest.approx(499.5 + 219.8), "BTC": pytest.approx(3.0)}
    assert ledger.daily_pnl("p", {"BTC/USDT": 100.0}) == pytest.approx((20 - 0.2 - 0.2) + (0 - 0.3))


def test_set_protection_and_a_ccxt_order_answer_become_a_fill(
    redis_client: redis.Redis, namespace: str
) -> None:
    order = {
        "clientOrderId": "cai-1",
        "side": "buy",
        "filled": 2.0,
        "average": 50.0,
        "fees": [{"cost": 0.002, "currency": "SOL"}, {"cost": 0.1, "currency": "USDT"}],
    }
    found = fill_from_order("SOL/USDT", order)
    assert found == Fill("cai-1", "buy", 2.0, 50.0, 0.2, 0.002)
    assert fill_from_order("SOL/USDT", {**order, "filled": 0}) is None
    ledger = Ledger(redis_client, KeySpace(namespace))
    assert ledger.set_protection("binance", "SOL/USDT", "watch") is None
    ledger.apply_fill("binance", "SOL/USDT", found)
    ledger.set_protection("binance", "SOL/USDT", "exchange", ["17", "18"])
    position = ledger.position("binance", "SOL/USDT")
    assert position is not None and position.amount == pytest.approx(1.998)
    assert position.protection is not None and position.protection["order_ids"] == ["17", "18"]
