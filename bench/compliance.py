"""Fair baselines, per exchange: 8 processes poll market data at twice the limit (issue 15).

For each exchange (``--exchanges``), on the sandbox speaking its dialect, with the limit of
the pool its market-data calls spend made small (``SandboxConfig.limits``: ``time_scale``
for Binance, the dialect's ``overrides`` for the others), ``--processes`` processes offer
twice that limit for ``--seconds``. Three contenders, each on a fresh sandbox:

- ours: every process's ccxt instance is made by ``make_exchange(..., limiter=...)``, so
  each request waits for the fleet's shared Redis limiter, whose pool for the exchange is
  set ``--margin`` under the sandbox's (``exchanges.<id>.rate_limits``; the margin absorbs
  requests in flight across a window edge; in a sliding window each request counts from its
  admission until one window after its answer, ``exchanges/limited.py``, so no more is kept);
- (a) ccxt's built-in limiter per process (``enableRateLimit``) at ccxt's own ``rateLimit``
  for the exchange, scaled by the factor the sandbox's limit was scaled from the published
  one, so that each process's ccxt stands to the sandbox as it stands to the real exchange;
- (b) the best a careful operator can do without shared state: ccxt's limiter per process
  set to 1/N of the budget (``rateLimit`` = N x window / limit, times the sandbox weight per
  ccxt cost unit of the calls made: ccxt's api cost table).

Two demand shapes: even (every process offers 2 x limit / N), uneven (one process offers
60 % of the 2 x limit, the other N - 1 share 40 %). Printed per exchange: weight (or
requests) the sandbox served per full window as a share of its limit (mean and lowest), the
limit violations the sandbox counted (``/sandbox/stats`` ``violations``, and 429/418/lockout
counts from its per-client stats), and what the processes saw: requests refused by our
limiter (waited past ``max_wait``), told "over the limit", or failed otherwise.

The pool each exchange spends, its sandbox limit and the fleet's pool are printed above
its table. ``--ccxt-rate raw`` runs (a) at ccxt's unscaled ``rateLimit`` instead. An
exchange whose dialect does not load is skipped with the reason. About 100 s per exchange
at the defaults (2 cores).

Run: ``python -m bench.compliance [--exchanges binance,okx,kraken,coinbase,htx]
[--seconds 12] [--processes 8] [--margin 0.03] [--ccxt-rate scaled|raw]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import redis

from bench.common import redis_for_bench
from core.config import AppConfig, SandboxConfig
from sandbox.admin import admin
from sandbox.dialects.base import PARAMS
from sandbox.server import Sandbox
from sandbox.thread import SandboxThread

#: A market-data call: (ccxt method, kwargs, sandbox weight, ccxt cost from its api table).
Call = tuple[str, dict[str, Any], float, float]


@dataclass(frozen=True)
class Venue:
    """One exchange as benched: the pool its calls spend, the sandbox's and fleet's limits."""

    ccxt_id: str
    #: the fleet's pool name (``ratelimit/exchange_limits/<id>.py``) the calls spend
    pool: str
    #: what the pool is, as the exchange publishes it, for the printout
    about: str
    calls: tuple[Call, ...]
    #: the sandbox's limit per ``window`` seconds (weight, or requests)
    limit: float
    window: float
    #: "fixed" / "sliding" window pools, or "bucket" (limit = rate x window, burst aside)
    kind: str
    #: the published rate (sandbox units per second), to scale ccxt's own ``rateLimit``
    published_per_second: float
    #: ``SandboxConfig.limits`` fields that set the sandbox's limit to ``limit``
    sandbox_limits: dict[str, Any]
    #: the sandbox's burst (bucket pools): the fleet's bucket capacity stays under it
    burst: float = 0.0
    unit: str = "requests"
    #: the fleet's bucket capacity (bucket pools)
    capacity: float = 1.0
    #: which admitted requests spend the pool: (endpoint "METHOD /path", path) -> bool
    spends: Callable[[str, str], bool] = field(default=lambda endpoint, path: True)

    @property
    def per_second(self) -> float:
        """Return the sandbox's limit per second."""
        return self.limit / self.window

    def fleet_rule(self, margin: float) -> dict[str, Any]:
        """Return the ``exchanges.<id>.rate_limits`` entry: the pool ``margin`` under ours.

        A sliding window counts arrivals in any span; the fleet counts each request from its
        admission until one window after its answer (which comes after its arrival), so the
        same margin as the other kinds suffices, however the requests are delayed.
        """
        if self.kind == "bucket":
            rate = self.per_second * (1 - margin)
            capacity = min(self.capacity, self.burst)
            return {"type": "token_bucket", "name": self.pool, "capacity": capacity, "rate": rate}
        algorithm = "fixed_window" if self.kind == "fixed" else "sliding_window"
        limit = math.floor(self.limit * (1 - margin))
        return {"type": algorithm, "name": self.pool, "limit": limit, "window": self.window}

    def weight_per_cost(self) -> float:
        """Return the most sandbox weight one ccxt cost unit buys among the calls."""
        return max(weight / cost for _, _, weight, cost in self.calls)


def _binance_weight(endpoint: str, params: dict[str, str]) -> float:
    from ratelimit.tables import BINANCE, scope_weights

    return scope_weights(BINANCE, endpoint, params).get("REQUEST_WEIGHT", 0.0)


_TICKERS: tuple[Call, ...] = tuple(
    ("fetch_ticker", {"symbol": s}, 1, 1) for s in ("BTC/USDT", "ETH/USDT", "SOL/USDT")
)

VENUES: dict[str, Venue] = {
    # REQUEST_WEIGHT 6000 per minute per IP; time_scale 1/30: 200 per 2 s, the published rate
    "binance": Venue(
        "binance",
        "REQUEST_WEIGHT",
        "REQUEST_WEIGHT per IP (6000 per minute published), fixed windows",
        (
            ("fetch_ohlcv", {"symbol": "BTC/USDT", "timeframe": "1m", "limit": 100}, 2, 0.4),
            ("fetch_ticker", {"symbol": "ETH/USDT"}, 2, 0.4),
            ("fetch_order_book", {"symbol": "SOL/USDT", "limit": 100}, 5, 1),
        ),
        limit=200,
        window=2.0,
        kind="fixed",
        published_per_second=100.0,
        sandbox_limits={"request_weight_per_minute": 200, "time_scale": 2.0 / 60},
        unit="weight",
    ),
    # GET market/ticker: 20 per 2 s per IP, sliding; the sandbox's set to 60 per 2 s
    "okx": Venue(
        "okx",
        "MARKET_TICKER",
        "GET /api/v5/market/ticker per IP (20 per 2 s published), sliding 2 s",
        _TICKERS,
        limit=60,
        window=2.0,
        kind="sliding",
        published_per_second=10.0,
        sandbox_limits={"overrides": {"market_ticker_per_2s": 60}},
        spends=lambda endpoint, path: endpoint == "GET /api/v5/market/ticker",
    ),
    # public calls: about 1 per second per IP (a bucket of 5); the sandbox's set to 30/s
    "kraken": Venue(
        "kraken",
        "PUBLIC",
        "public calls per IP (1/s, burst 5 published), a bucket; per 2 s = rate x 2 s",
        _TICKERS,
        limit=60,
        window=2.0,
        kind="bucket",
        published_per_second=1.0,
        # a burst of 10: arrivals of 8 processes bunch up in flight; the fleet's bucket keeps
        # 2 (its table's), so that it spaces admissions
        sandbox_limits={"overrides": {"public_rate": 30, "public_burst": 10}},
        burst=10,
        capacity=2,
        spends=lambda endpoint, path: path.startswith("/0/public/"),
    ),
    # public endpoints: 10 per second per IP (a bucket of one second); the sandbox's 30/s
    "coinbase": Venue(
        "coinbase",
        "PUBLIC",
        "public /api/v3/brokerage/market/* per IP (10/s published), a bucket of 1 s; "
        "per 2 s = rate x 2 s",
        (
            ("fetch_ticker", {"symbol": "BTC/USDT"}, 1, 3),
            ("fetch_order_book", {"symbol": "ETH/USDT", "limit": 50}, 1, 3),
            ("fetch_ohlcv", {"symbol": "SOL/USDT", "timeframe": "1m", "limit": 100}, 1, 3),
        ),
        limit=60,
        window=2.0,
        kind="bucket",
        published_per_second=10.0,
        sandbox_limits={"overrides": {"public_per_second": 30}},
        burst=30,
        capacity=2,
        spends=lambda endpoint, path: path.startswith("/api/v3/brokerage/market/"),
    ),
    # market data: 800 per second per IP, fixed 1 s intervals; the sandbox's set to 30/s
    "htx": Venue(
        "htx",
        "PUBLIC",
        "market data per IP (800 per 1 s published), fixed 1 s intervals",
        (
            ("fetch_ticker", {"symbol": "BTC/USDT"}, 1, 1),
            ("fetch_order_book", {"symbol": "ETH/USDT"}, 1, 1),
            ("fetch_ohlcv", {"symbol": "SOL/USDT", "timeframe": "1m", "limit": 100}, 1, 1),
        ),
        limit=30,
        window=1.0,
        kind="fixed",
        published_per_second=800.0,
        sandbox_limits={"overrides": {"public_per_1s": 30}},
        spends=lambda endpoint, path: path.startswith("/market/"),
    ),
}

CONTENDERS = ("ours", "a", "b")
CONTENDER_NAMES = {
    "ours": "ours (shared Redis limiter)",
    "a": "(a) ccxt built-in, per process",
    "b": "(b) ccxt at budget/N, per process",
}
DEMANDS = ("even", "uneven")


@dataclass(frozen=True)
class Job:
    """What one process does in one run."""

    venue: str
    contender: str
    url: str
    redis_url: str
    prefix: str
    #: weight (or requests) per second this process offers
    rate: float
    rate_limit_ms: float
    margin: float
    seconds: float
    start_at: float
    index: int
    max_wait: float


def _config(job: Job) -> AppConfig:
    venue = VENUES[job.venue]
    return AppConfig.model_validate(
        {
            "redis": {"key_prefix": job.prefix},
            "exchanges": {
                venue.ccxt_id: {
                    "ccxt_id": venue.ccxt_id,
                    "base_url": job.url,
                    "rate_limits": [venue.fleet_rule(job.margin)],
                }
            },
            # limits the exchange publishes (Binance's exchangeInfo) are adopted less the
            # safety margin: the same few % as the pool we set
            "rate_limiting": {
                "high_priority_reserve": 0.0,
                "safety_margin": job.margin,
                "max_wait": job.max_wait,
            },
        }
    )


def _outcome(exc: BaseException) -> str:
    """Return how a process counts a failed call."""
    import ccxt.async_support as ccxt_async

    from core.errors import LimiterUnavailableError, RateLimitedError

    if isinstance(exc, RateLimitedError | LimiterUnavailableError):
        return "limiter_refused"
    if isinstance(exc, ccxt_async.RateLimitExceeded | ccxt_async.DDoSProtection):
        return "told_over_limit"
    return "failed"


def poll(job: Job) -> dict[str, Any]:
    """One fleet process: offer ``job.rate`` per second for ``job.seconds``; count outcomes."""
    from exchanges.ccxt_factory import make_exchange
    from ratelimit.manager import ExchangeRateLimitManager

    venue = VENUES[job.venue]
    counts: dict[str, Any] = defaultdict(int)

    async def run() -> None:
        config = _config(job)
        settings = config.exchanges[venue.ccxt_id]
        if job.contender == "ours":
            client = redis.Redis.from_url(job.redis_url)
            limiter = ExchangeRateLimitManager(client, config)
            ex = make_exchange(venue.ccxt_id, settings, limiter=limiter, max_wait=job.max_wait)
        else:
            ex = make_exchange(
                venue.ccxt_id, settings, enableRateLimit=True, rateLimit=job.rate_limit_ms
            )
        try:
            for attempt in range(5):  # a sandbox that answered "over the limit" at start
                try:
                    await ex.load_markets()
                    break
                except Exception as exc:
                    counts["load_markets_failed"] += 1
                    counts.setdefault("first_error", f"load_markets: {exc}"[:160])
                    await asyncio.sleep(0.5 * (attempt + 1))
            while time.time() < job.start_at:
                await asyncio.sleep(0.005)
            due, n = job.start_at, job.index
            while time.time() < job.start_at + job.seconds:
                method, kwargs, weight, _ = venue.calls[n % len(venue.calls)]
                n += 1
                await asyncio.sleep(max(0.0, due - time.time()))
                due += weight / job.rate
                try:
                    await getattr(ex, method)(**kwargs)
                    counts["ok"] += 1
                except Exception as exc:  # the sandbox counts what happened; we classify
                    counts[_outcome(exc)] += 1
                    counts.setdefault("first_error", f"{type(exc).__name__}: {exc}"[:160])
        finally:
            await ex.close()

    asyncio.run(run())
    return dict(counts)


def warm(_: int) -> int:
    """Import what the pollers need, once per worker process."""
    import ccxt.async_support  # noqa: F401

    import exchanges.ccxt_factory  # noqa: F401

    return 0


class Served:
    """What the sandbox admitted, per window, of the requests that spend the benched pool."""

    def __init__(self, sandbox: Sandbox, venue: Venue) -> None:
        self.by_window: dict[int, float] = defaultdict(float)
        dialect = sandbox.dialect
        original = dialect.admit

        def admit(request: Any, endpoint: str, ip: str) -> dict[str, str]:
            now = time.time()
            headers = original(request, endpoint, ip)  # raises when refused: not served
            if venue.spends(endpoint, request.path):
                weight = (
                    _binance_weight(endpoint, request[PARAMS])
                    if venue.ccxt_id == "binance"
                    else 1.0
                )
                self.by_window[int(now // venue.window)] += weight
            return headers

        vars(dialect)["admit"] = admit


def _rate_limits(venue: Venue, processes: int, raw: bool = False) -> dict[str, float]:
    """Return ccxt's ``rateLimit`` (ms per cost unit) for contenders (a) and (b).

    (a) is ccxt's own, scaled by published / sandbox rate unless ``raw``.
    """
    import ccxt.async_support as ccxt_async

    own = float(getattr(ccxt_async, venue.ccxt_id)().rateLimit)
    scaled = own if raw else own * venue.published_per_second / venue.per_second
    share = processes * venue.window * 1000 * venue.weight_per_cost() / venue.limit
    return {"ours": 0.0, "a": scaled, "b": share, "ccxt_own": own}


def _rates(venue: Venue, demand: str, processes: int) -> list[float]:
    total = 2 * venue.per_second
    if demand == "even":
        return [total / processes] * processes
    return [0.6 * total] + [0.4 * total / (processes - 1)] * (processes - 1)


def _client_summary(clients: dict[str, Any]) -> tuple[dict[str, float], str]:
    """Return the limit answers summed over clients, and their scalar stats as text."""
    counted = (
        "sent_429",
        "sent_418",
        "lockouts",
        "bans",
        "too_many_requests",
        "rate_limit_exceeded",
        "temporary_lockout",
        "limited",
        "locked_out",
    )
    totals: dict[str, float] = defaultdict(float)
    parts = []
    for who, stats in clients.items():
        scalars = {k: v for k, v in stats.items() if isinstance(v, int | float) and v}
        for name in counted:
            totals[name] += float(stats.get(name, 0) or 0)
        parts.append(f"{who} {scalars}")
    return dict(totals), "; ".join(parts)


def measure(
    pool: Any, venue: Venue, contender: str, demand: str, redis_url: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Run the processes against a fresh sandbox; return what the sandbox saw and they saw."""
    settings = SandboxConfig.model_validate({"history_days": 1, "limits": venue.sandbox_limits})
    sandbox = Sandbox(settings, name=venue.ccxt_id, dialect=venue.ccxt_id)
    served = Served(sandbox, venue)
    thread = SandboxThread(sandbox).start()
    try:
        w = venue.window
        start = (math.floor(time.time() / w) + math.ceil(args.setup / w)) * w
        rate_limit = _rate_limits(venue, args.processes, args.ccxt_rate == "raw")[contender]
        base = Job(
            venue=venue.ccxt_id,
            contender=contender,
            url=thread.url,
            redis_url=redis_url,
            prefix=f"bench-c:{uuid.uuid4().hex[:8]}:",
            rate=1.0,
            rate_limit_ms=rate_limit,
            margin=args.margin,
            seconds=args.seconds,
            start_at=start,
            index=0,
            max_wait=args.max_wait,
        )
        jobs = [
            replace(base, rate=rate, index=i)
            for i, rate in enumerate(_rates(venue, demand, args.processes))
        ]
        outcomes: list[dict[str, Any]] = pool.map(poll, jobs, chunksize=1)
        stats = admin(thread.url, "stats")
    finally:
        thread.stop()
    count = int(args.seconds / w)
    full = [served.by_window.get(round(start / w) + i, 0.0) for i in range(1, count - 1)]
    totals, clients = _client_summary(stats.get("clients", {}))
    seen: dict[str, int] = defaultdict(int)
    errors = []
    for outcome in outcomes:
        for key, value in outcome.items():
            if key == "first_error":
                errors.append(value)
            else:
                seen[key] += value
    return {
        "used": sum(full) / (len(full) * venue.limit) if full else 0.0,
        "min": min(full) / venue.limit if full else 0.0,
        "max": max(full) / venue.limit if full else 0.0,
        "windows": len(full),
        "violations": stats.get("violations", 0),
        "totals": totals,
        "clients": clients,
        "seen": dict(seen),
        "errors": sorted(set(errors))[:3],
        "rate_limit": rate_limit,
    }


def _working(name: str) -> str | None:
    """Return why an exchange's dialect cannot be benched, or None when it loads."""
    from sandbox.dialects import dialect_for

    try:
        dialect_for(name)
    except Exception as exc:  # a dialect still being written: report and skip it
        return f"{type(exc).__name__}: {exc}"
    return None


def _violation_text(r: dict[str, Any]) -> str:
    t = r["totals"]
    parts = [
        f"{label} {t.get(key, 0):.0f}"
        for key, label in (
            ("sent_429", "429"),
            ("sent_418", "418"),
            ("too_many_requests", "too-many"),
            ("rate_limit_exceeded", "EAPI-rate"),
            ("limited", "limited"),
            ("locked_out", "in-lockout"),
            ("lockouts", "lockouts"),
            ("bans", "bans"),
        )
        if t.get(key, 0)
    ]
    return ", ".join(parts) or "-"


def _failed_text(seen: dict[str, int]) -> str:
    text = str(seen.get("failed", 0))
    if seen.get("load_markets_failed"):
        text += f" (+{seen['load_markets_failed']} load_markets retried)"
    return text


def report(venue: Venue, rows: dict[tuple[str, str], dict[str, Any]], args: Any) -> list[str]:
    """Return the printed table of one exchange."""
    limits = _rate_limits(venue, args.processes, args.ccxt_rate == "raw")
    how = (
        "ccxt's own, unscaled (--ccxt-rate raw)"
        if args.ccxt_rate == "raw"
        else f"own x published/sandbox rate {venue.published_per_second:g}/{venue.per_second:g}"
    )
    fleet = venue.fleet_rule(args.margin)
    fleet_text = ", ".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in fleet.items()
    )
    lines = [
        f"### {venue.ccxt_id}: pool {venue.pool} -- {venue.about}",
        f"sandbox limit {venue.limit:g} {venue.unit} per {venue.window:g} s "
        f"({venue.sandbox_limits}); fleet pool: {fleet_text}; demand 2x = "
        f"{2 * venue.limit:g} {venue.unit} per {venue.window:g} s from {args.processes} "
        f"processes, {args.seconds:g} s per run",
        f"ccxt rateLimit: own {limits['ccxt_own']:g} ms; (a) {limits['a']:.4g} ms ({how}); "
        f"(b) {limits['b']:.4g} ms (N x window / limit x {venue.weight_per_cost():g} "
        f"{venue.unit} per ccxt cost unit); calls: "
        + ", ".join(f"{m} ({w:g} {venue.unit}, ccxt cost {c:g})" for m, _, w, c in venue.calls),
        "",
        "| contender | demand | served/limit mean | lowest | highest | windows | violations "
        "| sandbox counted | ok | refused by our limiter | told over limit | failed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (contender, demand), r in rows.items():
        seen = r["seen"]
        lines.append(
            f"| {CONTENDER_NAMES[contender]} | {demand} | {r['used']:.1%} | {r['min']:.1%} | "
            f"{r['max']:.1%} | {r['windows']} | {r['violations']} | {_violation_text(r)} | "
            f"{seen.get('ok', 0)} | {seen.get('limiter_refused', 0)} | "
            f"{seen.get('told_over_limit', 0)} | {_failed_text(seen)} |"
        )
    lines.append("")
    lines.append("per-client stats (sandbox), and first errors the processes saw:")
    for (contender, demand), r in rows.items():
        lines.append(f"- {contender}/{demand}: {r['clients']}")
        for error in r["errors"]:
            lines.append(f"  - error: {error}")
    return lines


@contextlib.contextmanager
def _workers(processes: int) -> Iterator[Any]:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes) as pool:
        pool.map(warm, range(processes), chunksize=1)
        yield pool


def main() -> None:
    """Measure every contender and demand shape per exchange; print one table each."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--exchanges", default=",".join(VENUES))
    parser.add_argument("--seconds", type=float, default=12.0, help="per run (6 per exchange)")
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--margin", type=float, default=0.03, help="our limit below the sandbox's")
    parser.add_argument("--setup", type=float, default=3.0, help="seconds to load markets")
    parser.add_argument("--max-wait", type=float, default=30.0, help="our limiter's max wait")
    parser.add_argument(
        "--ccxt-rate",
        choices=("scaled", "raw"),
        default="scaled",
        help="(a): ccxt's rateLimit scaled as the sandbox's limit was (default), or as is",
    )
    args = parser.parse_args()
    names = [n.strip() for n in args.exchanges.split(",") if n.strip()]
    unknown = [n for n in names if n not in VENUES]
    if unknown:
        parser.error(f"unknown exchange(s) {unknown}; known: {', '.join(VENUES)}")
    skipped = {n: why for n in names if (why := _working(n)) is not None}
    with redis_for_bench() as redis_url, _workers(args.processes) as pool:
        for name in names:
            if name in skipped:
                print(f"### {name}: skipped, its dialect does not load: {skipped[name]}\n")
                continue
            venue = VENUES[name]
            try:
                rows = {
                    (contender, demand): measure(pool, venue, contender, demand, redis_url, args)
                    for contender in CONTENDERS
                    for demand in DEMANDS
                }
            except Exception as exc:  # e.g. a profile being edited: report, go on
                print(f"### {name}: could not run: {type(exc).__name__}: {exc}\n", flush=True)
                continue
            print("\n".join(report(venue, rows, args)) + "\n", flush=True)
            client = redis.Redis.from_url(redis_url)
            leftovers: list[bytes] = list(client.scan_iter("bench-c:*"))
            if leftovers:
                client.delete(*leftovers)


if __name__ == "__main__":
    main()
