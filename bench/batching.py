"""Weight and wall time of one 50-symbol analysis cycle with batching on vs off.

Both cycles run in this one invocation, each on a fresh fleet and sandbox (``python main.py
--once``'s: embedded Redis, the sandbox, a worker per tier). The baseline is the same
cycle with ``performance.batch_processing.enabled: false``. Weight is what the sandbox
charged (it prices requests as Binance does, market loading included); the floor is that
weight divided by the exchange's allowance per second, the least time the limit permits.

Run: ``python -m bench.batching [--symbols 50] [--weight-per-minute 6000]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys


def cycle(symbols: int, weight_per_minute: int, port: int, batching: str) -> dict[str, float]:
    """Run ``bench.cycle_time`` in a fresh process (a fleet per process); return its figures."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.cycle_time",
            "--symbols",
            str(symbols),
            "--weight-per-minute",
            str(weight_per_minute),
            "--port",
            str(port),
            "--batching",
            batching,
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    figures: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    """Run the cycle with batching off, then on; print both and their ratios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--weight-per-minute", type=int, default=6000)
    parser.add_argument("--port", type=int, default=18931)
    args = parser.parse_args()
    off = cycle(args.symbols, args.weight_per_minute, args.port, "off")
    on = cycle(args.symbols, args.weight_per_minute, args.port + 1, "on")
    print(f"{args.symbols} symbols, exchange limit {args.weight_per_minute} weight/min")
    for name, f in (("batching off (baseline)", off), ("batching on", on)):
        print(
            f"  {name:24s} exit {f['exit']:.0f}: weight {f['weight']:.0f}, "
            f"ticker calls {f['ticker_calls']:.0f}, cycle {f['seconds']:.1f} s, "
            f"floor {f['floor']:.1f} s (cycle / floor {f['seconds'] / f['floor']:.2f}), "
            f"429s {f['429']:.0f}"
        )
    endpoints = sorted({k[6:] for f in (off, on) for k in f if k.startswith("calls ")})
    print("  requests by endpoint (off -> on):")
    for endpoint in endpoints:
        before, after = off.get(f"calls {endpoint}", 0), on.get(f"calls {endpoint}", 0)
        print(f"    {endpoint:34s} {before:5.0f} -> {after:5.0f}")
    print(
        f"  on / off: weight {on['weight'] / off['weight']:.2f}, "
        f"cycle time {on['seconds'] / off['seconds']:.2f}, "
        f"floor {on['floor'] / off['floor']:.2f}"
    )


if __name__ == "__main__":
    main()
