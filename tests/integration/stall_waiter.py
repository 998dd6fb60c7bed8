"""``crypto-ai`` with a shorter stall bound, for tests that lose a stage on purpose.

``python -m tests.integration.stall_waiter SECONDS ARGS...`` runs ``crypto-ai ARGS...`` (the
real command, e.g. ``analyse``) with :data:`tasks.runs.STALL_SECONDS` set to ``SECONDS``, so
a test sees a stalled chain reported without waiting the production bound.
"""

from __future__ import annotations

import sys

from tasks import runs
from workers.cli import app


def main() -> None:
    """Set the stall bound from the first argument, then run the CLI on the rest."""
    runs.STALL_SECONDS = float(sys.argv[1])
    app(sys.argv[2:], prog_name="crypto-ai")


if __name__ == "__main__":
    main()
