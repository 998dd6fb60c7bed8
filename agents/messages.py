"""The messages the LLM is sent: the prompt files, and the data quoted as JSON.

The system message is a prompt file from ``agents/prompts`` with its values filled in; the
user message is data only. Headlines reach a prompt only when the news screen did not flag
them (``newest_trusted``), and only as quoted JSON with their provenance: the source and
the publish time. The prompts say that headlines are data, never instructions.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any, Literal

from agents.answers import STOP_ATR, TAKE_PROFIT_ATR
from agents.types import AnalystReport, Features, NewsItem

#: The newest trustworthy headlines one prompt shows the LLM: enough to read the news's
#: drift, and a bound on the prompt's size that config check's budget floor relies on
#: (core/config.py, ``LARGEST_CALL_CHARS``). The rules weigh every headline.
MAX_HEADLINES = 20


@functools.cache
def _prompt_text(name: str) -> str:
    return resources.files("agents").joinpath("prompts", f"{name}.txt").read_text()


def prompt(name: str, **values: Any) -> str:
    """Return a prompt file from ``agents/prompts`` with the values filled in."""
    return _prompt_text(name).format(**values)


def newest_trusted(news: list[NewsItem]) -> list[NewsItem]:
    """Return the ``MAX_HEADLINES`` newest items that are not suspicious, newest first."""
    trusted = [n for n in news if not n.suspicious]
    return sorted(trusted, key=lambda n: n.published, reverse=True)[:MAX_HEADLINES]


def quoted_headline(item: NewsItem) -> dict[str, Any]:
    """Return a headline as prompts quote it: where it came from, when, and its text."""
    return {
        "source": item.source,
        "published": item.published.strftime("%Y-%m-%dT%H:%MZ"),
        "title": item.title,
    }


def _significant(value: Any) -> Any:
    # six significant figures: what a model can quote back, well inside the evidence tolerance
    return float(f"{value:.6g}") if isinstance(value, float) else value


def data_message(features: Features, news: list[NewsItem], **extra: Any) -> str:
    """Return the user message: features and the newest trusted headlines as quoted JSON data.

    Each headline carries its provenance (source, publish time in UTC) and its sentiment;
    flagged ones never appear (``newest_trusted``).
    """
    headlines = [
        quoted_headline(n) | {"sentiment": round(n.sentiment, 2)} for n in newest_trusted(news)
    ]
    shown = {name: _significant(value) for name, value in features.model_dump().items()}
    payload = {"features": shown, "headlines": headlines, **extra}
    return "DATA (JSON):\n" + json.dumps(payload, default=str)


def case_messages(
    side: Literal["long", "short"],
    symbol: str,
    features: Features,
    news: list[NewsItem],
    last: float,
) -> tuple[str, str]:
    """Return the (system, user) messages asking for the long or short case."""
    system = prompt("case", side=side, symbol=symbol)
    return system, data_message(features, news, symbol=symbol, last=last)


def plan_messages(
    symbol: str, features: Features, long: AnalystReport, short: AnalystReport
) -> tuple[str, str]:
    """Return the (system, user) messages asking the strategist; entry is the last close."""
    system = prompt(
        "plan",
        symbol=symbol,
        entry=features.close,
        stop_atr="{:g} to {:g}".format(*STOP_ATR),
        target_atr="{:g} to {:g}".format(*TAKE_PROFIT_ATR),
    )
    # the rung is evidence of how much a case is worth; why the LLM failed is not
    hidden = {"fallback_reason"}
    user = data_message(
        features,
        [],
        long=long.model_dump(mode="json", exclude=hidden),
        short=short.model_dump(mode="json", exclude=hidden),
    )
    return system, user
