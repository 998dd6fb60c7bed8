"""The replay: the live agents decide at each bar close of a simulated clock.

At each decision time T (a close of the decision timeframe) the agents see the candles
closed at or before T (the last ``LOOKBACK`` of the decision timeframe, as the live snapshot
fetches; a longer timeframe is resampled from closed base candles only), the news published
before T and the position held then. A strategy turns that into a plan: by default the rules
rung of the live ladder (``agents.analysts.analyse``, ``agents.strategy.decide``); with
``backtest.llm_replay`` the whole live ladder, LLM first, its answers recorded. ``aim`` weighs
the plan against the position held, and the live risk guard (``agents.risk.check``) approves
and cuts it. Each decision says which rung decided it and, below the LLM, why. The order
fills at the next bar's open, moved by the slippage, and pays the fee.

Each base bar, in order: at its open, a position whose horizon has passed is closed, then
the order decided at the previous close fills; over its range, the stop and take-profit
trigger (both touched in one bar: the stop fills first; a bar that opens through the stop
fills at the open); at its close the equity is marked and, at a decision time, the agents
decide. Nothing here reads a candle after T when deciding at T.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agents import news as news_lib
from agents.analysts import analyse
from agents.features import compute
from agents.risk import RiskState, check
from agents.strategy import aim, decide, expires_at
from agents.types import Candle, Features, Holding, MarketSnapshot, NewsItem, TradePlan
from backtest.account import Account, Fill
from backtest.llm_record import Metered
from core.config import RiskLimits
from exchanges import candles as candles_lib
from resilience.position import PlanRef

#: Candles of the decision timeframe the agents see: what the live snapshot fetches
#: (``tasks/stages.py``, ``limit: 100``); every feature needs at most 35 of them.
LOOKBACK = 100


@dataclass(frozen=True)
class Moment:
    """What the agents know at decision time T."""

    symbol: str
    snapshot: MarketSnapshot
    features: Features
    news: tuple[NewsItem, ...]
    limits: RiskLimits
    #: The position held at T as the live strategy stage sees it (None: flat; a position
    #: whose horizon has passed is shown flat, as the fleet watch closes it).
    holding: Holding | None = None


@dataclass(frozen=True)
class Decided:
    """A plan, with the rung that answered each agent asked for it and why not the LLM.

    ``rungs`` holds ``(agent, rung, reason)`` in the order asked (``long``, ``short``,
    ``strategy``); ``reason`` is None where the LLM answered or was not asked.
    """

    plan: TradePlan
    rungs: tuple[tuple[str, str, str | None], ...] = ()


#: A strategy: the plan (a signal, before ``aim`` and the guard) for one moment, or the plan
#: with the rungs of the agents that made it.
Strategy = Callable[[Moment], TradePlan | Decided]


def rules(moment: Moment) -> TradePlan:
    """Return the live rules rung's plan: both analysts' cases weighed by the strategy."""
    score, count = news_lib.symbol_sentiment(moment.news, moment.symbol)
    long = analyse("long", moment.features, score, count)
    short = analyse("short", moment.features, score, count)
    return decide(moment.symbol, long, short, moment.features, moment.limits)


@dataclass(frozen=True)
class Settings:
    """How to replay: costs, cash, the decision timeframe, the span and the limits."""

    symbol: str
    exchange: str = "backtest"
    timeframe: str = "1h"
    fee_rate: float = 0.001
    slippage_bps: float = 5.0
    cash: float = 10_000.0
    start_ms: int | None = None
    end_ms: int | None = None
    limits: RiskLimits = field(default_factory=RiskLimits)


@dataclass(frozen=True)
class Decision:
    """One decision: the plan after ``aim`` and the guard, and what it was sent as."""

    time: int
    symbol: str
    action: str
    size: float
    price: float
    rung: str
    reason: str
    #: The rung of each agent asked (``long=llm short=rules strategy=llm``; empty for a
    #: strategy that says none).
    rungs: str = ""
    #: Why the LLM did not answer, per agent (``long: llm timed out: ...``; empty: it did).
    fallback_reason: str = ""


@dataclass(frozen=True)
class Mark:
    """The account at one bar's close."""

    time: int
    close: float
    cash: float
    position: float
    equity: float


@dataclass
class Result:
    """A finished replay: the bars replayed, decisions, fills, marks and closed positions."""

    settings: Settings
    base_ms: int
    bars: list[Candle]
    decisions: list[Decision]
    fills: list[Fill]
    marks: list[Mark]
    round_trips: list[float]
    #: The LLM's requests, replayed answers, tokens and cost
    #: (``backtest.llm_record.LLMTally.as_dict``); None for a strategy that asks no LLM.
    llm_usage: dict[str, Any] | None = None


def base_step(candles: Sequence[Candle]) -> int:
    """Return the data's bar length in ms: the smallest gap between consecutive candles."""
    gaps = [b.time - a.time for a, b in itertools.pairwise(candles)]
    if not gaps:
        raise ValueError("a replay needs at least two candles")
    return min(gaps)


@dataclass
class _Pending:
    side: str
    amount: float
    kind: str
    plan: PlanRef | None


@dataclass
class _Run:
    settings: Settings
    candles: Sequence[Candle]
    news: Sequence[NewsItem]
    strategy: Strategy
    base_ms: int
    factor: int
    account: Account
    pending: _Pending | None = None
    horizon_due: bool = False
    decisions: list[Decision] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)

    @property
    def slip(self) -> float:
        return self.settings.slippage_bps / 10_000

    def open_bar(self, bar: Candle) -> None:
        """Close an expired position, then fill the order decided at the previous close."""
        if self.horizon_due and self.account.amount > 0:
            price = bar.open * (1 - self.slip)
            self.account.fill(
                ms=bar.time,
                side="sell",
                amount=self.account.amount,
                reference=bar.open,
                price=price,
                kind="horizon",
            )
        self.horizon_due = False
        order, self.pending = self.pending, None
        if order is None:
            return
        buy = order.side == "buy"
        price = bar.open * (1 + self.slip if buy else 1 - self.slip)
        self.account.fill(
            ms=bar.time,
            side="buy" if buy else "sell",
            amount=order.amount,
            reference=bar.open,
            price=price,
            kind=order.kind,
            plan=order.plan,
        )

    def range_bar(self, bar: Candle) -> None:
        """Trigger the position's stop or take-profit on the bar's high and low."""
        p = self.account.position
        if p is None or not p.open:
            return
        if p.stop_loss is not None and bar.low <= p.stop_loss:
            level = min(p.stop_loss, bar.open)  # opened through the stop: the open
            self.account.fill(
                ms=bar.time,
                side="sell",
                amount=p.amount,
                reference=level,
                price=level * (1 - self.slip),
                kind="stop",
            )
        elif p.take_profit is not None and bar.high >= p.take_profit:
            # a resting limit: its own price, no slippage, no gap bonus
            self.account.fill(
                ms=bar.time,
                side="sell",
                amount=p.amount,
                reference=p.take_profit,
                price=p.take_profit,
                kind="take_profit",
            )

    def mark(self, bar: Candle) -> None:
        """Record the account at the bar's close."""
        a = self.account
        close_ms = bar.time + self.base_ms
        self.marks.append(Mark(close_ms, bar.close, a.cash, a.amount, a.equity(bar.close)))

    def view(self, index: int) -> list[Candle]:
        """Return the decision-timeframe candles closed at or before bar ``index``'s close."""
        first = max(0, index + 1 - LOOKBACK * self.factor)
        window = self.candles[first : index + 1]
        if self.factor == 1:
            return list(window)
        rows = [[c.time, c.open, c.high, c.low, c.close, c.volume] for c in window]
        merged = candles_lib.resample(rows, self.settings.timeframe, self.factor)
        return [
            Candle(time=r[0], open=r[1], high=r[2], low=r[3], close=r[4], volume=r[5])
            for r in merged
        ]

    def decide_at(self, index: int) -> None:
        """Let the agents decide at the close of bar ``index`` (module docstring)."""
        s, bar = self.settings, self.candles[index]
        now_ms = bar.time + self.base_ms
        now = datetime.fromtimestamp(now_ms / 1000, UTC)
        snapshot = MarketSnapshot(
            exchange=s.exchange,
            symbol=s.symbol,
            taken_at=now,
            candles={s.timeframe: self.view(index)},
            last=bar.close,
            bid=bar.close,
            ask=bar.close,
        )
        known = tuple(n for n in self.news if n.published < now)
        features = compute(snapshot, s.timeframe)
        held = self.account.holding()
        until = expires_at(held) if held is not None else None
        if until is not None and until <= now:
            # the fleet watch closes it at its horizon: the strategy sees the symbol flat
            self.horizon_due, held = True, None
        out = self.strategy(Moment(s.symbol, snapshot, features, known, s.limits, held))
        decided = out if isinstance(out, Decided) else Decided(out)
        plan = aim(decided.plan, held, now=now, limits=s.limits)
        state = RiskState(
            market_price=bar.close,
            position=0.0 if self.horizon_due else self.account.amount,
            daily_pnl=self.account.daily_pnl(now_ms, bar.close),
        )
        verdict = check(plan, s.limits, state)
        traded = verdict.approved and verdict.size > 0
        size = verdict.size if traded else 0.0
        self.record(now_ms, plan, bar.close, size, verdict.reasons, decided.rungs)
        if traded:
            ref = PlanRef(
                run_id=f"bt-{now_ms}",
                stop_loss=plan.stop_loss,
                take_profit=plan.take_profit,
                horizon=plan.horizon,
            )
            self.pending = _Pending(plan.action, verdict.size, plan.target or plan.action, ref)

    def record(  # noqa: PLR0917 - one decision's parts
        self,
        now_ms: int,
        plan: TradePlan,
        close: float,
        size: float,
        reasons: list[str],
        rungs: Sequence[tuple[str, str, str | None]] = (),
    ) -> None:
        """Append the decision as it is sent (a plan the guard refused is a hold)."""
        why = [f"{agent}: {reason}" for agent, _, reason in rungs if reason]
        if not rungs and plan.fallback_reason:
            why = [plan.fallback_reason]
        self.decisions.append(
            Decision(
                time=now_ms,
                symbol=plan.symbol,
                action=plan.action if size > 0 else "hold",
                size=size,
                price=plan.entry or close,
                rung=plan.rung.value,
                reason=f"{plan.rationale} | guard: {'; '.join(reasons)}",
                rungs=" ".join(f"{agent}={rung}" for agent, rung, _ in rungs),
                fallback_reason="; ".join(why),
            )
        )


def in_span(candle: Candle, settings: Settings, base_ms: int) -> bool:
    """Return whether a bar lies inside ``--start``/``--end`` (its open and its close)."""
    if settings.start_ms is not None and candle.time < settings.start_ms:
        return False
    return settings.end_ms is None or candle.time + base_ms <= settings.end_ms


def replay(
    candles: Sequence[Candle],
    settings: Settings,
    *,
    news: Sequence[NewsItem] = (),
    strategy: Strategy = rules,
    progress: Callable[[int, int], None] | None = None,
) -> Result:
    """Return the replay of ``candles`` (time-ordered) under ``settings`` (module docstring)."""
    base_ms = base_step(candles)
    decision_ms = candles_lib.seconds(settings.timeframe) * 1000
    if decision_ms % base_ms:
        raise ValueError(
            f"the data's bars ({base_ms // 1000}s) do not divide the timeframe {settings.timeframe}"
        )
    run = _Run(
        settings=settings,
        candles=candles,
        news=sorted(news, key=lambda n: n.published),
        strategy=strategy,
        base_ms=base_ms,
        factor=decision_ms // base_ms,
        account=Account(settings.exchange, settings.symbol, settings.cash, settings.fee_rate),
    )
    span = [i for i, c in enumerate(candles) if in_span(c, settings, base_ms)]
    if len(span) < 2:
        raise ValueError("fewer than two bars between --start and --end")
    metered = strategy if isinstance(strategy, Metered) else None
    before = metered.tally() if metered is not None else None
    for done, i in enumerate(span):
        bar = candles[i]
        if done:  # the first bar is only marked: nothing was decided before it
            run.open_bar(bar)
            run.range_bar(bar)
        run.mark(bar)
        # the last close decides too; its order has no next bar to fill on
        if (bar.time + base_ms) % decision_ms == 0:
            run.decide_at(i)
        if progress is not None:
            progress(done + 1, len(span))
    closed = [p.realized_pnl for p in run.account.closed]
    usage = None if metered is None or before is None else metered.tally() - before
    return Result(
        settings=settings,
        base_ms=base_ms,
        bars=[candles[i] for i in span],
        decisions=run.decisions,
        fills=run.account.fills,
        marks=run.marks,
        round_trips=closed,
        llm_usage=usage.as_dict() if usage is not None else None,
    )


def windows(candles: Sequence[Candle], settings: Settings, count: int) -> list[tuple[int, int]]:
    """Return ``count`` consecutive out-of-sample windows covering the replayed span.

    Each window is ``(start_ms, end_ms)``: the open of its first bar and the close of its
    last; one window's end is the next one's start. The bars are shared out as evenly as
    whole bars allow (the first windows take the remainder).
    """
    if count < 1:
        raise ValueError("--walk-forward needs at least one window")
    base_ms = base_step(candles)
    span = [c for c in candles if in_span(c, settings, base_ms)]
    if len(span) < 2 * count:
        raise ValueError(f"{len(span)} bars cannot make {count} windows of two bars or more")
    size, extra = divmod(len(span), count)
    out, first = [], 0
    for k in range(count):
        last = first + size + (1 if k < extra else 0) - 1
        out.append((span[first].time, span[last].time + base_ms))
        first = last + 1
    return out


def walk_forward(
    candles: Sequence[Candle],
    settings: Settings,
    count: int,
    *,
    news: Sequence[NewsItem] = (),
    strategy: Strategy = rules,
) -> list[Result]:
    """Return one replay per window of :func:`windows`, each from a flat account.

    A window's replay is given the candles up to its end only: the candles before its
    start warm the indicators up (the agents' usual lookback), and none after its end
    exists for it.
    """
    base_ms = base_step(candles)
    results = []
    for start_ms, end_ms in windows(candles, settings, count):
        known = [c for c in candles if c.time + base_ms <= end_ms]
        part = dataclasses.replace(settings, start_ms=start_ms, end_ms=end_ms)
        results.append(replay(known, part, news=news, strategy=strategy))
    return results
