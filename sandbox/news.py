"""An RSS feed of headlines written from the price path, so the news agent has real text
to read offline: one item per symbol every 30 market-minutes over the last day."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime
from xml.sax.saxutils import escape

from sandbox.market import PricePath

NAMES = {"BTC": "Bitcoin", "ETH": "Ethereum", "SOL": "Solana", "BNB": "BNB", "XRP": "XRP"}
_EVERY = 1800.0


def headline(path: PricePath, at: float) -> tuple[str, str]:
    """Return (title, description) for the symbol's move over the hour before ``at``."""
    base = path.symbol.split("/")[0]
    name = NAMES.get(base, base)
    now, before = path.price_at(at), path.price_at(at - 3600)
    change = (now / before - 1) * 100
    if change >= 1:
        title = f"{name} rallies {change:.1f}% in an hour as buyers return"
    elif change <= -1:
        title = f"{name} slides {abs(change):.1f}% in an hour amid selling pressure"
    else:
        title = f"{name} trades flat near {now:,.2f} USDT"
    description = (
        f"{path.symbol} moved from {before:,.4f} to {now:,.4f} ({change:+.2f}%) over the last hour."
    )
    return title, description


def rss(paths: list[PricePath], now: float, hours: float = 24.0) -> str:
    """Return an RSS 2.0 document of headlines published up to ``now``, newest first."""
    items = []
    last = int(now // _EVERY) * _EVERY
    t = last
    while t > now - hours * 3600:
        for path in paths:
            if t - 3600 < path.first_minute * 60:
                continue
            title, description = headline(path, t)
            guid = f"sandbox-{path.symbol.replace('/', '')}-{int(t)}"
            published = format_datetime(datetime.fromtimestamp(t, UTC))
            items.append(
                f"<item><title>{escape(title)}</title><link>http://sandbox.local/news/{guid}</link>"
                f'<guid isPermaLink="false">{guid}</guid><pubDate>{published}</pubDate>'
                f"<description>{escape(description)}</description></item>"
            )
        t -= _EVERY
    return (
        '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel>'
        "<title>crypto_ai_trading sandbox news</title><link>http://sandbox.local/</link>"
        "<description>Headlines generated from the sandbox's price paths</description>"
        + "".join(items)
        + "</channel></rss>"
    )
