"""Submitting a watchlist run costs the submitter a handful of Redis round trips, not N."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[2]


def test_a_fifty_symbol_run_is_one_message_from_the_submitter() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.submission", "--symbols", "50", "--json"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=240,
    )
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    canvas, ours = figures["canvas"]["commands"], figures["one-message"]["commands"]
    assert canvas >= 50 * 5  # publishing the canvas: several round trips per symbol
    assert ours <= 30  # one message and the connection's bookkeeping, whatever N is
