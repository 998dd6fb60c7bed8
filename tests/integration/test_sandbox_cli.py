"""``crypto-ai sandbox`` for an exchange the sandbox has no dialect for: one clear line."""

from __future__ import annotations

import subprocess
import sys

from tests.integration.workers import REPO_ROOT


def test_a_sandbox_for_an_unknown_exchange_is_refused_in_one_line() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "workers.cli", "sandbox", "--exchange", "foo", "--port", "8999"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2, run
    assert run.stderr.strip().splitlines() == [
        "error: the sandbox has no dialect 'foo'; it speaks: binance, coinbase, htx, kraken, okx"
    ]
