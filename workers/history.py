"""``crypto-ai history fetch``: download candles through the fleet's limiter into the store.

Every page is one ``fetch_ohlcv`` call of the fleet's :class:`ResilientAPIClient`, so the
shared Redis limiter admits it against the same pools the running fleet draws on: a
download never spends weight the fleet on the same IP needs, and waits when the pools are
low. Pages go forward by ``since`` (the last candle's open plus one timeframe) and each is
written to the store (:mod:`backtest.history`) as it arrives, so an interrupted download
keeps what it got and a rerun asks only for the candles after the last stored one. Only
closed candles are stored: the candle still forming is left for a later run.

A ``since`` earlier than the first stored candle backfills the gap first: forward from
``since`` into the part file beside the store file, which is put in front of the stored
candles once it reaches them (:func:`backtest.history.merge_part`). A backfill cut short (an
error, an interrupt, or ``until`` before the first stored candle) stays in the part, and the
next fetch resumes it after its last candle, so no page is asked for twice and the store
file is never left with a hole.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from backtest import history as store_lib
from exchanges import candles as candles_lib
from resilience import FallbackConfig, ResilientAPIClient

#: History is never served from the response cache: a cached page may be short.
FRESH = FallbackConfig(cache_enabled=False, timeout=60.0)

#: Candles asked for per page (Binance serves up to 1,000 klines for the same weight).
PAGE = 1000

app = typer.Typer(help="Download candle history into a local store (docs/BACKTEST.md).")


@dataclass(frozen=True)
class Fetched:
    """What one symbol's download did: candles written, requests made, the file.

    ``written`` counts the candles added to the store file, ``backfilled`` those of them
    put before the first stored candle; ``pending`` the candles waiting in the part file
    (a backfill not finished yet).
    """

    symbol: str
    written: int
    requests: int
    path: Path
    last: int | None
    first: int | None = None
    backfilled: int = 0
    pending: int = 0


@dataclass
class _Pages:
    """One symbol's pages of ``fetch_ohlcv`` through the fleet's client, and their count."""

    client: ResilientAPIClient
    exchange: str
    symbol: str
    timeframe: str
    limit: int
    now_ms: int | None
    requests: int = 0

    @property
    def step(self) -> int:
        return candles_lib.seconds(self.timeframe) * 1000

    async def fill(self, path: Path, cursor: int, until_ms: int | None) -> int:
        """Append the closed candles from ``cursor`` to ``until_ms`` (exclusive) to ``path``."""
        step, written = self.step, 0
        while until_ms is None or cursor < until_ms:
            # a candle is stored once closed: its close at or before now
            closed_by = int(time.time() * 1000) if self.now_ms is None else self.now_ms
            params: dict[str, Any] = {
                "symbol": self.symbol,
                "timeframe": self.timeframe,
                "since": cursor,
                "limit": self.limit,
            }
            answer = await self.client.resilient_request(
                self.exchange, "fetch_ohlcv", params, FRESH
            )
            self.requests += 1
            rows = [r for r in answer.data or [] if int(r[0]) >= cursor]
            kept = [
                r
                for r in rows
                if int(r[0]) + step <= closed_by and (until_ms is None or int(r[0]) < until_ms)
            ]
            written += store_lib.append(path, kept)
            if not rows:
                break
            newest = max(int(r[0]) for r in rows)
            if newest + step > closed_by or len(kept) < len(rows):
                break  # reached the candle still forming, or the end asked for
            cursor = newest + step
        return written

    async def backfill(self, path: Path, since_ms: int, until_ms: int | None) -> int:
        """Fill the gap before the first stored candle (module docstring); return how many
        candles were put in front of it."""
        part = store_lib.part_path(path)
        merged = 0
        if part.is_file():  # an unfinished backfill: resume it after its last candle
            held = store_lib.last_time(part)
            start = since_ms if held is None else held + self.step
            if not await self._part(path, start, until_ms):
                return merged
            merged += store_lib.merge_part(path)
        first = store_lib.first_time(path)
        if first is not None and since_ms < first and await self._part(path, since_ms, until_ms):
            merged += store_lib.merge_part(path)
        return merged

    async def _part(self, path: Path, start: int, until_ms: int | None) -> bool:
        """Fill the part from ``start`` up to the first stored candle; return whether it got
        there (False: ``until_ms`` came first, the part waits for a later fetch)."""
        first = store_lib.first_time(path)
        assert first is not None
        end = first if until_ms is None else min(first, until_ms)
        await self.fill(store_lib.part_path(path), start, end)
        return end == first


async def fetch_symbol(
    client: ResilientAPIClient,
    exchange: str,
    symbol: str,
    timeframe: str,
    *,
    since_ms: int,
    store: Path,
    until_ms: int | None = None,
    limit: int = PAGE,
    now_ms: int | None = None,
) -> Fetched:
    """Download ``symbol``'s closed candles from ``since_ms`` up to ``until_ms`` (exclusive,
    by open time) into the store: the gap before the first stored candle, then after the
    last stored one (module docstring); return what it did."""
    pages = _Pages(client, exchange, symbol, timeframe, limit, now_ms)
    path = store_lib.store_path(store, exchange, symbol, timeframe)
    backfilled = await pages.backfill(path, since_ms, until_ms)
    stored = store_lib.last_time(path)
    cursor = since_ms if stored is None else max(since_ms, stored + pages.step)
    written = backfilled + await pages.fill(path, cursor, until_ms)
    return Fetched(
        symbol,
        written,
        pages.requests,
        path,
        store_lib.last_time(path),
        first=store_lib.first_time(path),
        backfilled=backfilled,
        pending=store_lib.count(store_lib.part_path(path)),
    )


async def fetch(
    client: ResilientAPIClient,
    exchange: str,
    symbols: list[str],
    timeframe: str,
    *,
    since_ms: int,
    store: Path,
    until_ms: int | None = None,
    limit: int = PAGE,
) -> list[Fetched]:
    """Download every symbol in turn (module docstring); return what each download did."""
    return [
        await fetch_symbol(
            client,
            exchange,
            symbol,
            timeframe,
            since_ms=since_ms,
            store=store,
            until_ms=until_ms,
            limit=limit,
        )
        for symbol in symbols
    ]


def _ms(text: str, name: str) -> int:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an ISO date or time", param_hint=name) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@app.command("fetch")
def fetch_command(  # noqa: PLR0917 - typer reads each option from a parameter
    exchange: Annotated[str, typer.Option("--exchange", help="a configured exchange")],
    symbols: Annotated[str, typer.Option("--symbols", help="comma-separated, e.g. BTC/USDT")],
    since: Annotated[str, typer.Option("--since", help="ISO start (UTC)")],
    timeframe: Annotated[str, typer.Option("--timeframe", help="candle timeframe")] = "1h",
    until: Annotated[str | None, typer.Option("--until", help="ISO end (UTC)")] = None,
    store: Annotated[Path, typer.Option("--store", help="the store directory")] = Path("history"),
    limit: Annotated[int, typer.Option("--limit", help="candles per request")] = PAGE,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="config file (default: $CRYPTO_AI_CONFIG)"),
    ] = None,
) -> None:
    """Download OHLCV through the fleet's limiter into --store (resumable, idempotent)."""
    from core.config_loader import load_config
    from core.errors import ConfigError
    from workers import runtime

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        typer.echo(exc.render(), err=True)
        raise typer.Exit(2) from None
    if exchange not in cfg.exchanges:
        typer.echo(f"error: {exchange!r} is not configured ({', '.join(cfg.exchanges)})", err=True)
        raise typer.Exit(2)
    runtime.configure(cfg)
    client = runtime.exchange_client()
    names = [s.strip() for s in symbols.split(",") if s.strip()]

    async def download() -> list[Fetched]:
        try:
            return await fetch(
                client,
                exchange,
                names,
                timeframe,
                since_ms=_ms(since, "--since"),
                until_ms=None if until is None else _ms(until, "--until"),
                store=store,
                limit=limit,
            )
        finally:
            await client.close()

    for done in runtime.run_async(download()):
        back = f" ({done.backfilled} before the first stored)" if done.backfilled else ""
        typer.echo(
            f"{done.symbol}: {done.written} candles written{back} in {done.requests} "
            f"requests, stored from {_iso(done.first)} up to {_iso(done.last)} in {done.path}"
        )
        if done.pending:
            typer.echo(
                f"{done.symbol}: {done.pending} earlier candles wait in "
                f"{store_lib.part_path(done.path).name} until the gap up to "
                f"{_iso(done.first)} is fetched (fetch again without --until)"
            )


def _iso(ms: int | None) -> str:
    return "nothing" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()
