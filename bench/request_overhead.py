"""Request overhead: what the resilient path adds to one read, against bare ccxt.

Both contenders read from one sandbox in one run, the same three symbols in turn; the
baseline is a bare ``ccxt.async_support.binance`` pointed at the same sandbox
(``enableRateLimit`` off, its URLs rebased as ``exchanges/ccxt_factory.py`` does).

- ours: ``ResilientAPIClient.resilient_request`` with response caching, coalescing and
  batching off, so every call goes through the limiter, breaker, retry and gateway to the
  exchange (a cache miss).
- (a) latency: one process, sequential ``fetch_ticker`` calls, ours and bare interleaved
  call by call (each pair in alternating order) so that drift hits both; p50 and p99 of
  each, and ours minus bare.
- (b) throughput: 1, 4 and 8 processes, each with its own clients, event loop and
  ``--concurrency`` coroutines, reading for ``--seconds`` per contender (both contenders
  live in the same processes and take turns in ``--slices`` slices, so that drift and
  neighbours hit both); requests per second, ours / bare. Two reads:
  ``fetch_ticker`` (the sandbox spends a few ms on each: its rolling 24 h statistics) and a
  5-level ``fetch_order_book`` (almost free for the sandbox, so the clients bound it).

Every limit is out of reach (the fleet's REQUEST_WEIGHT and RAW_REQUESTS, and the
sandbox's), so nothing waits for the budget. The sandbox serves from a thread of this
process (one core at most); its CPU share during each throughput run is printed: near 100%
means the sandbox, not the client, bounded that row.

Run: ``python -m bench.request_overhead [--n 2000] [--seconds 5] [--processes 1,4,8]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import re
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import redis

from bench.common import percentile, redis_for_bench
from core.config import AppConfig, SandboxConfig
from resilience import FallbackConfig, ResilientAPIClient
from sandbox.admin import admin
from sandbox.server import Sandbox
from sandbox.thread import SandboxThread

SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
PREFIX = "bench-o:"
HUGE = 10**9  # a limit no run reaches
#: The reads measured, with their parameters besides the symbol. A ticker costs the sandbox
#: a few ms (a rolling 24 h of 1-minute candles); a 5-level book almost nothing, so that
#: throughput is bounded by the clients rather than by the sandbox.
READS: dict[str, dict[str, Any]] = {"fetch_ticker": {}, "fetch_order_book": {"limit": 5}}
LATENCY_READ = "fetch_ticker"

Call = Callable[[str, str], Awaitable[Any]]


def _config(url: str) -> AppConfig:
    """The fleet's config: limits out of reach; cache, batching (and coalescing) off."""
    return AppConfig.model_validate(
        {
            "redis": {"key_prefix": PREFIX},
            "exchanges": {
                "binance": {
                    "base_url": url,
                    "rate_limits": [
                        {
                            "type": "fixed_window",
                            "name": "REQUEST_WEIGHT",
                            "limit": HUGE,
                            "window": 60,
                        },
                        {
                            "type": "fixed_window",
                            "name": "RAW_REQUESTS",
                            "limit": HUGE,
                            "window": 300,
                        },
                    ],
                }
            },
            "rate_limiting": {"high_priority_reserve": 0.0},
            "performance": {"caching": {"enabled": False}, "batch_processing": {"enabled": False}},
        }
    )


_ORIGIN = re.compile(r"^https?://[^/]+")


def _rebase(api: Any, base: str) -> Any:
    """Return ccxt's ``urls['api']`` with every URL's scheme and host replaced by ``base``."""
    if isinstance(api, str):
        return _ORIGIN.sub(base.rstrip("/"), api)
    if isinstance(api, dict):
        return {key: _rebase(value, base) for key, value in api.items()}
    return api


def bare_exchange(url: str) -> Any:
    """Return ccxt's binance at the sandbox, configured as the fleet's factory does."""
    import ccxt.async_support as ccxt_async

    sandbox = SandboxConfig()
    exchange = ccxt_async.binance(
        {
            "enableRateLimit": False,
            "timeout": 10_000,
            "options": {
                "fetchMarkets": {"types": ["spot"]},
                "fetchCurrencies": False,
                "fetchMargins": False,
            },
            "apiKey": sandbox.api_key,
            "secret": sandbox.api_secret.get_secret_value(),
        }
    )
    exchange.urls["api"] = _rebase(exchange.urls["api"], url)
    if any(not u.startswith(url) for u in _strings(exchange.urls["api"])):
        raise RuntimeError("a ccxt API URL is not the sandbox's")
    return exchange


def _strings(api: Any) -> list[str]:
    if isinstance(api, str):
        return [api]
    if isinstance(api, dict):
        return [s for value in api.values() for s in _strings(value)]
    return []


def _params(endpoint: str, symbol: str) -> dict[str, Any]:
    return {"symbol": symbol, **READS[endpoint]}


@dataclass
class Contenders:
    """Both clients of one process and event loop, and a read through each."""

    client: ResilientAPIClient
    bare: Any

    @classmethod
    def open(cls, url: str, redis_url: str) -> Contenders:
        """Build both clients (call inside the event loop that will use them)."""
        client = ResilientAPIClient(redis.Redis.from_url(redis_url), _config(url), coalesce=False)
        return cls(client, bare_exchange(url))

    async def ours(self, endpoint: str, symbol: str) -> Any:
        """One read through the whole resilient path (a cache miss: it reaches the sandbox)."""
        fallback = FallbackConfig(cache_enabled=False)
        answer = await self.client.resilient_request(
            "binance", endpoint, _params(endpoint, symbol), fallback
        )
        if answer.source != "exchange":
            raise RuntimeError(f"answered from {answer.source}, not the exchange")
        return answer.data

    async def baseline(self, endpoint: str, symbol: str) -> Any:
        """The same read through bare ccxt."""
        return await getattr(self.bare, endpoint)(**_params(endpoint, symbol))

    def call(self, name: str) -> Call:
        """Return the read of contender ``name`` (``ours`` or ``bare``)."""
        return self.ours if name == "ours" else self.baseline

    async def warm(self, endpoints: list[str], rounds: int) -> None:
        """Load markets, open connections, fill the limiter's and breaker's caches."""
        for n in range(rounds):
            for endpoint in endpoints:
                await self.ours(endpoint, SYMBOLS[n % len(SYMBOLS)])
                await self.baseline(endpoint, SYMBOLS[n % len(SYMBOLS)])

    async def close(self) -> None:
        """Close both clients' HTTP sessions."""
        await self.client.close()
        await self.bare.close()


def latency_worker(url: str, redis_url: str, n: int, out: str) -> None:
    """One process: ``n`` sequential tickers each, interleaved; write the samples (seconds)."""

    async def run() -> dict[str, list[float]]:
        both = Contenders.open(url, redis_url)
        samples: dict[str, list[float]] = {"ours": [], "bare": []}
        try:
            await both.warm([LATENCY_READ], 50)
            for i in range(n):
                symbol = SYMBOLS[i % len(SYMBOLS)]
                for name in ("ours", "bare") if i % 2 == 0 else ("bare", "ours"):
                    call = both.call(name)
                    t0 = time.perf_counter()
                    await call(LATENCY_READ, symbol)
                    samples[name].append(time.perf_counter() - t0)
        finally:
            await both.close()
        return samples

    Path(out).write_text(json.dumps(asyncio.run(run())))


async def _saturate(call: Call, endpoint: str, concurrency: int, seconds: float) -> dict[str, int]:
    """Read with ``concurrency`` coroutines for ``seconds``; count the reads done in time."""
    counts = {"done": 0, "errors": 0}
    end = time.time() + seconds

    async def loop(k: int) -> None:
        n = k
        while time.time() < end:
            try:
                await call(endpoint, SYMBOLS[n % len(SYMBOLS)])
            except Exception:
                counts["errors"] += 1
            else:
                counts["done"] += time.time() <= end
            n += 1

    await asyncio.gather(*(loop(k) for k in range(concurrency)))
    return counts


def throughput_worker(
    url: str,
    redis_url: str,
    phases: list[tuple[str, str]],
    concurrency: int,
    seconds: float,
    barrier: Any,
    out: str,
) -> None:
    """One process: every (endpoint, contender) phase in turn, started with the others."""

    async def run() -> list[dict[str, int]]:
        both = Contenders.open(url, redis_url)
        results = []
        try:
            await both.warm(sorted({endpoint for endpoint, _ in phases}), 5)
            for endpoint, name in phases:
                await asyncio.to_thread(barrier.wait, 300)  # all processes are ready
                await asyncio.to_thread(barrier.wait, 300)  # the parent is measuring
                results.append(await _saturate(both.call(name), endpoint, concurrency, seconds))
        finally:
            await both.close()
        return results

    Path(out).write_text(json.dumps(asyncio.run(run())))


def latency(url: str, redis_url: str, n: int) -> dict[str, list[float]]:
    """Run the interleaved sequential reads in a child process; return the samples."""
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "latency.json")
        process = ctx.Process(target=latency_worker, args=(url, redis_url, n, out))
        process.start()
        process.join()
        if process.exitcode != 0:
            raise RuntimeError(f"the latency process failed (exit {process.exitcode})")
        samples: dict[str, list[float]] = json.loads(Path(out).read_text())
    return samples


def throughput(
    url: str,
    redis_url: str,
    processes: int,
    phases: list[tuple[str, str]],
    args: argparse.Namespace,
) -> dict[tuple[str, str], dict[str, float]]:
    """Run ``processes`` readers through the phases (slices of ``--seconds``, taking turns).

    Return per (read, contender): requests per second and the sandbox's CPU share, over all
    of its slices.
    """
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes + 1)
    length = args.seconds / args.slices
    cpu: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        outs = [str(Path(tmp) / f"{i}.json") for i in range(processes)]
        procs = [
            ctx.Process(
                target=throughput_worker,
                args=(url, redis_url, phases, args.concurrency, length, barrier, out),
            )
            for out in outs
        ]
        for p in procs:
            p.start()
        for _ in phases:
            barrier.wait(300)
            barrier.wait(300)
            cpu0 = time.process_time()  # this process only serves the sandbox meanwhile
            time.sleep(length)
            cpu.append(time.process_time() - cpu0)
        for p in procs:
            p.join()
        if any(p.exitcode != 0 for p in procs):
            raise RuntimeError(f"a throughput process failed ({processes} processes)")
        counts = [json.loads(Path(out).read_text()) for out in outs]
    totals: dict[tuple[str, str], dict[str, float]] = {}
    for i, phase in enumerate(phases):
        total = totals.setdefault(phase, {"done": 0.0, "errors": 0.0, "cpu": 0.0, "time": 0.0})
        total["done"] += sum(c[i]["done"] for c in counts)
        total["errors"] += sum(c[i]["errors"] for c in counts)
        total["cpu"] += cpu[i]
        total["time"] += length
    return {
        phase: {
            "per_s": t["done"] / t["time"],
            "errors": t["errors"],
            "sandbox_cpu": t["cpu"] / t["time"],
        }
        for phase, t in totals.items()
    }


def machine(redis_url: str) -> str:
    """Return one line describing where the figures were measured."""
    info: dict[str, Any] = redis.Redis.from_url(redis_url).info("server")  # type: ignore[assignment]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"machine: {platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
        f"load {load}; Python {platform.python_version()}, ccxt {metadata.version('ccxt')}, "
        f"aiohttp {metadata.version('aiohttp')}, redis-server {info['redis_version']} on "
        "loopback; sandbox in a thread of the parent process"
    )


def _row(cells: list[str], widths: tuple[int, ...]) -> str:
    first, *rest = cells
    return f"{first:{widths[0]}} " + " ".join(
        f"{c:>{w}}" for c, w in zip(rest, widths[1:], strict=True)
    )


def print_latency(samples: dict[str, list[float]], n: int) -> None:
    """Print p50/p99 of both contenders and the difference."""
    ms = {name: (percentile(s, 50) * 1e3, percentile(s, 99) * 1e3) for name, s in samples.items()}
    widths = (44, 8, 8)
    print(f"(a) latency: {n} sequential {LATENCY_READ} calls each, interleaved, one process")
    print(_row(["contender", "p50 ms", "p99 ms"], widths))
    print(_row(["bare ccxt (baseline)", *(f"{v:.3f}" for v in ms["bare"])], widths))
    print(_row(["ours: resilient_request, cache miss", *(f"{v:.3f}" for v in ms["ours"])], widths))
    added = [ms["ours"][i] - ms["bare"][i] for i in (0, 1)]
    print(_row(["added by ours (ours - bare)", *(f"{v:+.3f}" for v in added)], widths))
    ratio = [ms["ours"][i] / ms["bare"][i] for i in (0, 1)]
    print(_row(["ours / bare", *(f"{v:.2f}" for v in ratio)], widths))


Rows = dict[tuple[str, str], dict[str, float]]


def print_throughput(rows: dict[int, Rows], endpoints: list[str], args: argparse.Namespace) -> None:
    """Print requests per second of both contenders per read and process count, ours / bare."""
    widths = (16, 9, 10, 10, 11, 16, 16, 6)
    print(
        f"(b) throughput: {args.seconds:g} s per contender and row (in {args.slices} slices, "
        f"taking turns), {args.concurrency} coroutines per process; sandbox CPU: its thread's "
        "share of one core"
    )
    header = ["read", "processes", "bare rq/s", "ours rq/s", "ours / bare"]
    print(_row([*header, "sandbox CPU bare", "sandbox CPU ours", "errors"], widths))
    for endpoint in endpoints:
        for processes, r in rows.items():
            bare, ours = r[(endpoint, "bare")], r[(endpoint, "ours")]
            cells = [
                endpoint,
                str(processes),
                f"{bare['per_s']:.0f}",
                f"{ours['per_s']:.0f}",
                f"{ours['per_s'] / bare['per_s']:.2f}",
                f"{bare['sandbox_cpu']:.0%}",
                f"{ours['sandbox_cpu']:.0%}",
                f"{bare['errors'] + ours['errors']:.0f}",
            ]
            print(_row(cells, widths))


def _phases(endpoints: list[str], slices: int) -> list[tuple[str, str]]:
    """Every (read, contender) pair once per slice; who goes first alternates per slice."""
    phases = []
    for n in range(slices):
        for endpoint in endpoints:
            order = ("bare", "ours") if n % 2 == 0 else ("ours", "bare")
            phases += [(endpoint, name) for name in order]
    return phases


def main() -> None:
    """Measure latency and throughput of ours and bare ccxt on one sandbox; print both."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000, help="sequential calls per contender")
    parser.add_argument(
        "--seconds",
        type=float,
        default=5.0,
        help="throughput: seconds per read, contender and processes",
    )
    parser.add_argument(
        "--slices",
        type=int,
        default=5,
        help="throughput: contenders take turns in this many slices",
    )
    parser.add_argument("--processes", default="1,4,8", help="process counts, comma-separated")
    parser.add_argument("--concurrency", type=int, default=4, help="coroutines per process")
    parser.add_argument(
        "--reads", default=",".join(READS), help=f"throughput reads, from {', '.join(READS)}"
    )
    args = parser.parse_args()
    counts = [int(p) for p in args.processes.split(",")]
    endpoints = [e for e in args.reads.split(",") if e]
    unknown = set(endpoints) - set(READS)
    if unknown:
        parser.error(f"unknown reads: {', '.join(sorted(unknown))}")
    if args.slices < 1 or args.seconds <= 0 or args.n < 10:
        parser.error("--slices must be at least 1, --seconds positive and --n at least 10")
    settings = SandboxConfig.model_validate(
        {
            "history_days": 1,
            "symbols": list(SYMBOLS),
            "limits": {"request_weight_per_minute": HUGE, "raw_requests_per_5m": HUGE},
        }
    )
    with redis_for_bench() as redis_url:
        sandbox = SandboxThread(Sandbox(settings)).start()
        try:
            context = machine(redis_url)
            samples = latency(sandbox.url, redis_url, args.n)
            phases = _phases(endpoints, args.slices)
            rows = {p: throughput(sandbox.url, redis_url, p, phases, args) for p in counts}
            stats = admin(sandbox.url, "stats")["clients"].get("127.0.0.1", {})
        finally:
            sandbox.stop()
            client = redis.Redis.from_url(redis_url)
            leftovers: list[bytes] = client.keys(f"{PREFIX}*")  # type: ignore[assignment]
            if leftovers:
                client.delete(*leftovers)
    print(context)
    print_latency(samples, args.n)
    print_throughput(rows, endpoints, args)
    print(f"sandbox: {stats.get('sent_429', 0)} 429s, {stats.get('sent_418', 0)} 418s")


if __name__ == "__main__":
    main()
