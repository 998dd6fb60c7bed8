"""Redis round trips to submit a watchlist run: one message vs publishing the canvas.

Baseline: the submitter publishes every chain itself (``watchlist_run(...).apply_async()``):
the header tasks, the chord bookkeeping and a result subscription per task, about a dozen
commands per symbol. Ours: ``submit_watchlist`` sends one ``analysis.submit`` message and a
worker publishes the canvas next to Redis. Commands are counted by the server
(``INFO commandstats``) on a private embedded Redis with no worker attached, so each count is
the submitter's own; every command is one round trip from the submitter. Over a network,
multiply by the round-trip time: at 20 ms, 500 commands are 10 s.

Run: ``python -m bench.submission [--symbols 50] [--json]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from typing import Any


def _measure(mode: str, symbols: int) -> dict[str, Any]:
    """Submit one run in this process (fresh app) and count the server's commands."""
    import redis

    from core.config import AppConfig
    from workers import runtime
    from workers.redis_server import EmbeddedRedis

    server = EmbeddedRedis(tempfile.mkdtemp(prefix="crypto-ai-bench-"), appendonly=False)
    url = server.start()
    try:
        names = [f"C{i:02d}/USDT" for i in range(symbols)]
        config = AppConfig.model_validate(
            {
                "redis": {"url": url},
                "exchanges": {"binance": {"base_url": "http://127.0.0.1:9"}},
                "watchlist": [{"exchange": "binance", "symbols": names}],
            }
        )
        runtime.configure(config, url)
        import workers.app  # noqa: F401 - binds the shared tasks to the fleet's app
        from tasks.runs import submit_watchlist, watchlist_run

        watchlist_run(config)[1].apply_async()  # warm: connections open, nothing counted yet
        probe = redis.Redis.from_url(url)

        def calls() -> int:
            stats = probe.info("commandstats")
            return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")

        before, started = calls(), time.perf_counter()
        if mode == "canvas":
            watchlist_run(config)[1].apply_async()
        else:
            submit_watchlist(config)
        seconds = time.perf_counter() - started
        commands = calls() - before
        return {"mode": mode, "commands": commands, "seconds": seconds}
    finally:
        server.stop()


def measure(symbols: int) -> dict[str, dict[str, Any]]:
    """Return both modes' figures, each measured in a fresh process."""
    figures = {}
    for mode in ("canvas", "one-message"):
        out = subprocess.run(
            [sys.executable, "-m", "bench.submission", "--child", mode, "--symbols", str(symbols)],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        figures[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    """Print the round trips of both ways to submit, and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", choices=["canvas", "one-message"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_measure(args.child, args.symbols)), flush=True)
        return
    figures = measure(args.symbols)
    if args.json:
        print(json.dumps(figures))
        return
    base, ours = figures["canvas"], figures["one-message"]
    print(f"submitting a {args.symbols}-symbol watchlist run")
    for name, f in (("canvas from the caller (baseline)", base), ("one message (ours)", ours)):
        print(
            f"  {name:34s} {f['commands']:4d} Redis commands, "
            f"{f['seconds'] * 1000:6.1f} ms on localhost"
        )
    print(f"  ours / baseline: {ours['commands'] / base['commands']:.3f} of the round trips")


if __name__ == "__main__":
    main()
