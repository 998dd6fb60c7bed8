"""Run the crypto_ai_trading fleet locally: ``python main.py [--config FILE]``.

The same as ``crypto-ai up``: embedded Redis if none is configured, a Celery worker per
priority tier, beat and Flower, until Ctrl-C.
"""

from __future__ import annotations

import sys

from workers.cli import app


def main(argv: list[str] | None = None) -> int:
    """Start the fleet with the given command-line options; return the exit code."""
    args = sys.argv[1:] if argv is None else argv
    try:
        app(["up", *args], prog_name="main.py", standalone_mode=False)
    except SystemExit as exc:
        return int(exc.code or 0)
    except Exception as exc:  # click raises its own errors for bad options
        print(f"main.py: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
