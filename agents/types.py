"""The agents' typed data: what goes in (news, market snapshot) and what comes out (reports,
plans, risk decisions). Every output records which rung of the ladder answered it."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Confidence = Annotated[float, Field(ge=0.0, le=1.0)]


class Rung(enum.StrEnum):
    """Which rung of the ladder produced an answer: LLM -> cache -> rules -> abstain."""

    LLM = "llm"
    CACHE = "cache"
    RULES = "rules"
    ABSTAIN = "abstain"


class Model(BaseModel):
    """Base of the agents' types: immutable, unknown fields rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class NewsItem(Model):
    """One headline, with where it came from and when it was published."""

    id: str
    title: str
    summary: str = ""
    source: str
    url: str = ""
    published: datetime
    symbols: tuple[str, ...] = ()
    sentiment: Annotated[float, Field(ge=-1.0, le=1.0)] = 0.0
    suspicious: bool = False


class Candle(Model):
    """One OHLCV candle (open time in milliseconds)."""

    time: int
    open: float
    high: float
    low: float
    close: float
    volume: float


class MarketSnapshot(Model):
    """What the market looked like at ``taken_at``: candles per timeframe, ticker, book."""

    exchange: str
    symbol: str
    taken_at: datetime
    candles: dict[str, list[Candle]]
    last: float
    bid: float
    ask: float
    bids: list[tuple[float, float]] = []
    asks: list[tuple[float, float]] = []


class Features(Model):
    """Indicators computed from a snapshot (None where there was too little data)."""

    timeframe: str
    close: float
    trend: float | None
    rsi: float | None
    macd: float | None
    macd_signal: float | None
    macd_hist: float | None
    atr: float | None
    bollinger_upper: float | None
    bollinger_lower: float | None
    volume_z: float | None
    spread: float
    book_imbalance: float


class Evidence(Model):
    """One fact a report rests on, with its number."""

    name: str
    value: float
    meaning: str


class AnalystReport(Model):
    """The long or the short case for one symbol."""

    side: Literal["long", "short"]
    thesis: str
    evidence: list[Evidence]
    confidence: Confidence
    invalidation: float | None
    rung: Rung = Rung.RULES
    #: Why the LLM rung did not answer, in one line (None when it did or was not asked).
    fallback_reason: str | None = None


#: What a plan does to the symbol's position (docs/POSITIONS.md, "Decisions"): ``open`` a
#: new one, ``add`` to it, ``hold`` it (or stay flat), ``reduce`` it, ``close`` it, or
#: ``reverse`` it (spot: there is no short, so a reverse is a close).
Target = Literal["open", "add", "hold", "reduce", "close", "reverse"]


class Holding(Model):
    """The position a strategy decides with: what the ledger holds of the symbol."""

    side: Literal["long", "short"]
    amount: Annotated[float, Field(gt=0.0)]
    entry: float
    stop_loss: float | None = None
    take_profit: float | None = None
    horizon: str | None = None
    opened_at: datetime | None = None
    run_id: str | None = None
    #: How its exits are protected: ``exchange``, ``watch`` or None.
    protection: str | None = None


class TradePlan(Model):
    """What the strategy decided: buy, sell or hold, how much, with which exits.

    ``action`` and ``size`` are the order the execution stage sends (a close is a sell of
    the position's amount); ``target`` says what that does to the position the strategy saw
    (``position``), and ``signal`` what the cases alone said.
    """

    action: Literal["buy", "sell", "hold"]
    symbol: str
    size: Annotated[float, Field(ge=0.0)] = 0.0
    entry: float | None = None
    stop_loss: float | None = None
    take_profit: float | None = None
    horizon: str = "4h"
    confidence: Confidence = 0.0
    rationale: str = ""
    rung: Rung = Rung.RULES
    #: Why the LLM rung did not answer, in one line (None when it did or was not asked).
    fallback_reason: str | None = None
    #: When the data the plan rests on was taken, and after which moment no order may act on it.
    decided_at: datetime | None = None
    valid_until: datetime | None = None
    #: What the plan does to the position (None: a plan decided without the ledger).
    target: Target | None = None
    #: The position the strategy saw when it decided (None: flat).
    position: Holding | None = None
    #: What the cases alone said (buy, sell or hold), before the position was weighed.
    signal: Literal["buy", "sell", "hold"] | None = None

    @model_validator(mode="after")
    def _exits_on_the_right_side(self) -> TradePlan:
        if self.action == "hold":
            return self
        if self.entry is None or self.size <= 0:
            raise ValueError("a buy or sell needs an entry price and a positive size")
        below, above = (self.stop_loss, self.take_profit)
        if self.action == "sell":
            below, above = above, below
        if below is not None and below >= self.entry:
            raise ValueError("the exit below the entry is not below it")
        if above is not None and above <= self.entry:
            raise ValueError("the exit above the entry is not above it")
        return self
