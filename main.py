"""Run the crypto_ai_trading fleet locally: ``python main.py [--config FILE]``.

The same as ``crypto-ai up``: embedded Redis if none is configured, a Celery worker per
priority tier, beat and Flower, until Ctrl-C.
"""

from __future__ import annotations

import sys

from workers.cli import app


def main(argv: list[str] | None = None) -> None:
    """Start the fleet with the given options; exits with the fleet's exit code."""
    args = sys.argv[1:] if argv is None else argv
    app(["up", *args], prog_name="main.py")


if __name__ == "__main__":
    main()
