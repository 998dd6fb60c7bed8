"""``crypto-ai kill``: the kill switch from the command line, as lines a person reads."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from resilience.kill import KillOutcome, kill, kill_off, operator

if TYPE_CHECKING:
    import redis

    from core.config import AppConfig


async def kill_lines(
    client: redis.Redis, config: AppConfig, *, flatten: bool, off: bool
) -> tuple[list[str], bool]:
    """Run the kill (or ``off``); return one line per order cancelled and position closed,
    a final line, and whether everything asked was done."""
    from resilience import ResilientAPIClient

    api = ResilientAPIClient(client, config)
    who = operator()
    try:
        if off:
            was_on = await kill_off(api, who=who)
            return [f"kill switch off (by {who})" if was_on else "kill switch was not on"], True
        outcome = await kill(api, flatten=flatten, who=who)
    finally:
        await api.close()
    return render(outcome, flatten), not outcome.failed


def render(outcome: KillOutcome, flatten: bool) -> list[str]:
    """Return the lines of a kill: each order cancelled, each position closed, each failure."""
    lines = [_cancelled(o) for o in outcome.cancelled]
    lines += [_closed(p) for p in outcome.closed]
    lines += [f"FAILED {problem}" for problem in outcome.failed]
    switch = (
        "kill switch was already on" if outcome.was_on else f"kill switch on (by {outcome.who})"
    )
    if not outcome.cancelled and not outcome.closed and not outcome.failed:
        left = "no open order, no position" if flatten else "no open order"
        return [*lines, f"{switch}: nothing left to do ({left})"]
    done = [f"{len(outcome.cancelled)} orders cancelled"]
    if flatten:
        done.append(f"{len(outcome.closed)} positions closed")
    if outcome.failed:
        done.append(f"{len(outcome.failed)} failed")
    return [*lines, f"{switch}: {', '.join(done)}"]


def _cancelled(order: dict[str, Any]) -> str:
    price = f" at {order['price']:g}" if isinstance(order.get("price"), int | float) else ""
    return (
        f"cancelled {order['exchange']} {order['symbol']} {order['client_order_id']}: "
        f"{order.get('type')} {order.get('side')} {order.get('amount')}{price}"
    )


def _closed(position: dict[str, Any]) -> str:
    return (
        f"closed {position['exchange']} {position['symbol']}: {position['side']} "
        f"{position['amount']:.8g} (entry {position['entry']:.8g}), sold {position['filled']} "
        f"at {position['average']} by {position['client_order_id']} ({position['status']})"
    )
