"""Fleet processes for the resilience tests: each runs a ResilientAPIClient loop."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import redis

from core.config import AppConfig
from resilience import FallbackConfig, ResilientAPIClient


def poll(
    redis_url: str,
    config: dict[str, Any],
    seconds: float,
    start_at: float,
    out: str,
    pause: float = 0.05,
) -> None:
    """Ask for the BTC/USDT ticker until ``seconds`` pass; record each answer's level/source."""
    cfg = AppConfig.model_validate(config)

    async def run() -> list[dict[str, Any]]:
        client = ResilientAPIClient(redis.Redis.from_url(redis_url), cfg)
        answers = []
        while time.time() < start_at:
            await asyncio.sleep(0.005)
        deadline = time.time() + seconds
        try:
            while time.time() < deadline:
                try:
                    answer = await client.resilient_request(
                        "binance",
                        "fetch_ticker",
                        {"symbol": "BTC/USDT"},
                        FallbackConfig(level="partial", timeout=8),
                    )
                    answers.append(
                        {"t": time.time(), "level": answer.level.name, "source": answer.source}
                    )
                except Exception as exc:  # recorded for the test to judge
                    answers.append({"t": time.time(), "error": f"{type(exc).__name__}: {exc}"})
                await asyncio.sleep(pause)
        finally:
            await client.close()
        return answers

    Path(out).write_text(json.dumps(asyncio.run(run())))


def tickers(redis_url: str, config: dict[str, Any], symbols: list[str], out: str, go: str) -> None:
    """Say ready, wait for the start time in ``go``, then ask for every symbol's ticker at once.

    Records what each caller got in ``out``.
    """
    cfg = AppConfig.model_validate(config)

    async def ask(client: ResilientAPIClient, symbol: str) -> dict[str, Any]:
        answer = await client.resilient_request(
            "binance", "fetch_ticker", {"symbol": symbol}, FallbackConfig(timeout=20)
        )
        return {
            "asked": symbol,
            "got": answer.data["symbol"],
            "last": answer.data["last"],
            "source": answer.source,
            "level": answer.level.name,
        }

    async def run() -> list[dict[str, Any]]:
        client = ResilientAPIClient(redis.Redis.from_url(redis_url), cfg)
        Path(out + ".ready").touch()
        while not Path(go).exists() or not Path(go).read_text():
            await asyncio.sleep(0.005)
        start_at = float(Path(go).read_text())
        while time.time() < start_at:
            await asyncio.sleep(0.005)
        try:
            return list(await asyncio.gather(*(ask(client, s) for s in symbols)))
        finally:
            await client.close()

    Path(out).write_text(json.dumps(asyncio.run(run())))


def fresh_after(answers: list[list[dict[str, Any]]], after: float) -> list[float]:
    """Return when the pollers got an answer from the exchange (not a fallback) after ``after``."""
    fresh = ("exchange", "coalesced", "batched")
    return [a["t"] for p in answers for a in p if a.get("source") in fresh and a["t"] > after]
