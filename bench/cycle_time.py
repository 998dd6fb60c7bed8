"""Cycle time for a 50-symbol watchlist on the sandbox, against the rate-limit floor.

The floor is what the exchange's limit allows at best: the request weight the cycle used
(counted by the sandbox) divided by the weight the exchange allows per second. A cycle at the
floor spends the whole budget and nothing else slows it; the ratio says how far above it we
are. Our limiter is set 3% below the sandbox's limit (requests in flight across a window
edge). With windows of a minute, a cycle that needs less than one window's weight can beat
the floor: then the limit is not what bounds it. The fleet is ``python main.py --once``'s:
embedded Redis, the sandbox, a worker per tier.

Run: ``python -m bench.cycle_time [--symbols 50]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import yaml

from core.config_loader import load_config
from sandbox.admin import admin
from workers import cli, runtime
from workers.fleet import run_once


def run_cycle(
    symbols: int, weight_per_minute: int, port: int, *, batching: bool = True
) -> dict[str, float]:
    """Run one analysis cycle on a fresh fleet and sandbox; return what it took and spent."""
    names = [f"C{i:02d}/USDT" for i in range(symbols)]
    with tempfile.TemporaryDirectory() as tmp:
        url = f"http://127.0.0.1:{port}"
        config_path = Path(tmp) / "config.yaml"
        config_path.write_text(
            yaml.safe_dump(
                {
                    "redis": {"embedded": {"dir": f"{tmp}/redis", "appendonly": False}},
                    "exchanges": {
                        "binance": {
                            "base_url": url,
                            "rate_limits": [
                                {
                                    "type": "fixed_window",
                                    "name": "REQUEST_WEIGHT",
                                    "window": 60,
                                    "limit": int(weight_per_minute * 0.97),
                                }
                            ],
                            "sandbox": {
                                "symbols": names,
                                "history_days": 20,
                                "starting_balances": {"USDT": 1_000_000},
                                "limits": {"request_weight_per_minute": weight_per_minute},
                            },
                        }
                    },
                    "watchlist": [{"exchange": "binance", "symbols": names}],
                    "news": {"sandbox_feeds": False},
                    "reports": {"dir": f"{tmp}/reports"},
                    "celery": {"worker_concurrency": 3},
                    "performance": {"batch_processing": {"enabled": batching}},
                }
            )
        )
        config = load_config(config_path, env={})
        figures: dict[str, float] = {}
        calls: dict[str, int] = {}

        def cycle() -> int:
            runtime.configure(config)
            start = time.monotonic()
            code = cli._submit_run(config, 900)
            figures["seconds"] = time.monotonic() - start
            seen = admin(url, "stats")
            stats = seen["clients"].get("127.0.0.1", {})
            figures["weight"] = float(stats.get("weight_total", 0))
            figures["429"] = float(stats.get("sent_429", 0))
            figures["ticker_calls"] = float(
                seen["requests_by_endpoint"].get("GET /api/v3/ticker/24hr", 0)
            )
            calls.update(seen["requests_by_endpoint"])
            return code

        figures["exit"] = run_once(config, config_path, cycle)
    figures["floor"] = figures["weight"] / (weight_per_minute / 60)
    for endpoint, count in calls.items():
        figures[f"calls {endpoint}"] = float(count)
    return figures


def main() -> None:
    """Run one cycle and print its time next to the floor."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--weight-per-minute", type=int, default=6000)
    parser.add_argument("--port", type=int, default=18911)
    parser.add_argument("--batching", choices=["on", "off"], default="on")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    figures = run_cycle(
        args.symbols, args.weight_per_minute, args.port, batching=args.batching == "on"
    )
    if args.json:
        print(json.dumps(figures))
        return
    print(
        f"{args.symbols} symbols, exchange limit {args.weight_per_minute} weight/min, "
        f"exit {figures['exit']:.0f}"
    )
    print(
        f"cycle time {figures['seconds']:.1f} s; weight used {figures['weight']:.0f} "
        f"(includes market loading); floor {figures['floor']:.1f} s; "
        f"cycle / floor = {figures['seconds'] / figures['floor']:.2f}; "
        f"429s {figures['429']:.0f}"
    )


if __name__ == "__main__":
    main()
