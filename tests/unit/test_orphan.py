"""An orphaned fleet process ends after its grace period (workers/orphan.py), real processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
# the grandchild ignores SIGTERM (a warm shutdown that cannot finish) and watches its parent
GRANDCHILD = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "from workers.orphan import watch_if_asked; watch_if_asked(); time.sleep(60)"
)
# the middle process (the fleet) starts it in a session of its own, as workers/fleet.py does,
# with the grace and its own pid in the environment; prints its pid, then waits
MIDDLE = (
    "import os, subprocess, sys, time; "
    "env = {**os.environ, 'CRYPTO_AI_ORPHAN_GRACE': '0.5', 'CRYPTO_AI_ORPHAN_PARENT': str(os.getpid())}; "
    f"p = subprocess.Popen([sys.executable, '-c', {GRANDCHILD!r}], start_new_session=True, env=env); "
    "print(p.pid, flush=True); time.sleep(60)"
)


def test_an_orphan_ends_itself_after_its_grace_and_a_watched_parent_keeps_it() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    middle = subprocess.Popen(
        [sys.executable, "-c", MIDDLE], stdout=subprocess.PIPE, text=True, env=env
    )
    assert middle.stdout is not None
    orphan = psutil.Process(int(middle.stdout.readline()))
    try:
        time.sleep(0.3)  # possibly before it started watching: it must still notice
        assert orphan.is_running(), "alive while its parent lives"
        middle.send_signal(signal.SIGKILL)
        middle.wait(10)
        orphan.wait(10)  # raises TimeoutExpired if it outlives its grace
    finally:
        for process in (middle, orphan):
            with contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess):
                process.kill()
    assert not orphan.is_running()
