"""What the fleet is doing: workers, queue depths, health round trips, LLM usage, positions."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import redis
from celery import Celery

from core.config import PRIORITY_QUEUES, AppConfig
from core.keys import KeySpace
from llm.usage import RedisUsage
from monitoring.alerts import AlertEngine
from monitoring.queues import budgets, queue_depths
from ratelimit.manager import ExchangeRateLimitManager
from resilience.breaker import ENDPOINT_CLASSES, SharedBreaker
from resilience.ledger import Ledger


@dataclass
class FleetStatus:
    """A snapshot of the fleet, the same facts for the terminal view and for JSON."""

    redis: str
    workers: dict[str, list[str]] = field(default_factory=dict)
    queues: dict[str, int] = field(default_factory=dict)
    health: dict[str, dict[str, str]] = field(default_factory=dict)
    breakers: dict[str, dict[str, Any]] = field(default_factory=dict)
    budgets: dict[str, dict[str, float]] = field(default_factory=dict)
    alerts: dict[str, Any] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)
    llm: dict[str, Any] = field(default_factory=dict)
    positions: dict[str, dict[str, float]] = field(default_factory=dict)
    taken_at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        """Return the snapshot as plain JSON-able data."""
        return asdict(self)


def worker_queues(app: Celery, timeout: float = 1.0) -> dict[str, list[str]]:
    """Return each live worker's name with the queues it consumes."""
    replies = app.control.inspect(timeout=timeout).active_queues() or {}
    return {name: sorted(q["name"] for q in queues) for name, queues in replies.items()}


def last_health(client: redis.Redis, keys: KeySpace) -> dict[str, dict[str, str]]:
    """Return the last recorded health round trip per queue."""
    health = {}
    for queue in PRIORITY_QUEUES:
        raw = cast(dict[bytes, bytes], client.hgetall(keys.health(queue)))
        if raw:
            health[queue] = {k.decode(): v.decode() for k, v in raw.items()}
    return health


def llm_today(client: redis.Redis, keys: KeySpace, config: AppConfig) -> dict[str, Any]:
    """Return the fleet's LLM usage today (UTC): calls, tokens, cost, the budget left."""
    today = RedisUsage(client, keys).day()
    budget = config.llm.budget_per_day
    return {
        **today.as_dict(),
        "budget_per_day": budget,
        "budget_left": None if budget is None else max(0, budget - today.tokens),
    }


def llm_line(today: dict[str, Any]) -> str:
    """Return the day's LLM usage (:func:`llm_today`) as the one line status prints."""
    calls = int(today.get("calls", 0))
    if calls:
        failed = f" ({today['failed']} failed)" if today.get("failed") else ""
        text = (
            f"{calls} calls{failed}, {today['prompt_tokens']:,} prompt + "
            f"{today['completion_tokens']:,} completion tokens, "
            f"{float(today['seconds']) / calls:.2f}s per call"
        )
        if today.get("unmetered"):
            text += f", {today['unmetered']} without reported usage"
        if today.get("cost") is not None:
            text += f", cost {float(today['cost']):.4f}"
    else:
        text = "no calls"
    budget = today.get("budget_per_day")
    if budget is not None:
        text += f"; budget {budget:,} tokens, {today['budget_left']:,} left"
    return f"LLM today (UTC): {text}"


def positions_today(client: redis.Redis, keys: KeySpace, config: AppConfig) -> dict[str, Any]:
    """Return per exchange: open positions, exposure and unrealised P&L at the last marks,
    and the P&L realised today (UTC), from the position ledger."""
    ledger = Ledger(client, keys)
    found: dict[str, Any] = {}
    for exchange in sorted({*config.exchanges, *ledger.exchanges()}):
        held, marks = ledger.positions(exchange), ledger.marks(exchange)
        prices = {p.symbol: marks[p.symbol].price if p.symbol in marks else p.entry for p in held}
        found[exchange] = {
            "open": len(held),
            "exposure": sum(p.amount * prices[p.symbol] for p in held),
            "unrealized_pnl": sum(p.unrealized(prices[p.symbol]) for p in held),
            "realized_pnl_today": ledger.realized_today(exchange),
        }
    return found


def positions_line(positions: dict[str, Any]) -> str:
    """Return the ledger's summary (:func:`positions_today`) as the one line status prints."""
    parts = [
        f"{exchange} {p['open']} open, exposure {p['exposure']:.2f}, unrealised "
        f"{p['unrealized_pnl']:+.2f}, realised today {p['realized_pnl_today']:+.2f}"
        for exchange, p in positions.items()
    ]
    return "Positions (at last marks): " + ("; ".join(parts) or "none")


def fleet_status(
    app: Celery, client: redis.Redis, keys: KeySpace, redis_label: str, config: AppConfig
) -> FleetStatus:
    """Gather a :class:`FleetStatus` from the broker, the workers and the shared state."""
    breakers = {
        f"{exchange}:{klass}": SharedBreaker(client, exchange, klass, keys=keys).snapshot()
        for exchange in config.exchanges
        for klass in ENDPOINT_CLASSES
    }
    runs = [r.decode() for r in cast(list[bytes], client.zrevrange(keys.runs_index(), 0, 4))]
    return FleetStatus(
        redis=redis_label,
        workers=worker_queues(app),
        queues=queue_depths(client, keys, config.queues()),
        health=last_health(client, keys),
        breakers=breakers,
        budgets=budgets(ExchangeRateLimitManager(client, config)),
        alerts=AlertEngine(client, keys, config.monitoring.alerts).active(),
        runs=runs,
        llm=llm_today(client, keys, config),
        positions=positions_today(client, keys, config),
    )


#: How long ``crypto-ai positions`` waits for a fresh ticker before showing the last mark.
TICKER_SECONDS = 10.0


async def position_rows(client: redis.Redis, config: AppConfig) -> list[dict[str, Any]]:
    """Return one row per open position, valued at a fresh ticker (or the last mark).

    ``last_source`` says which: ``ticker`` (read now through the fleet's client), ``mark``
    (the last price the ledger saw: the exchange could not be reached) or ``entry``.
    """
    from core.errors import CryptoAIError
    from resilience import ResilientAPIClient
    from resilience.fallback import FallbackConfig

    keys = KeySpace(config.redis.key_prefix)
    ledger, api = Ledger(client, keys), ResilientAPIClient(client, config)
    fresh = FallbackConfig(level="none", timeout=TICKER_SECONDS)
    rows = []
    try:
        for held in ledger.positions():
            mark = ledger.marks(held.exchange).get(held.symbol)
            last, source = (mark.price, "mark") if mark else (held.entry, "entry")
            if held.exchange in config.exchanges:
                try:
                    params = {"symbol": held.symbol}
                    answer = await api.resilient_request(
                        held.exchange, "fetch_ticker", params, fresh
                    )
                    last, source = float(answer.data["last"]), "ticker"
                except (CryptoAIError, KeyError, TypeError, ValueError):
                    pass  # unreachable or unreadable: the ledger's last mark stands
            protection = (held.protection or {}).get("kind")
            rows.append(
                {
                    "exchange": held.exchange,
                    "symbol": held.symbol,
                    "side": held.side,
                    "amount": held.amount,
                    "entry": held.entry,
                    "last": last,
                    "last_source": source,
                    "stop_loss": held.stop_loss,
                    "take_profit": held.take_profit,
                    "protection": protection,
                    "unrealized_pnl": held.unrealized(last),
                    "realized_pnl": held.realized_pnl,
                    "opened_at": held.opened_at,
                    "run_id": held.run_id,
                }
            )
    finally:
        await api.close()
    return rows
