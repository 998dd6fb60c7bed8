"""End a fleet process whose parent died, once its warm shutdown had its grace period.

A process the fleet starts (``workers/fleet.py``) gets SIGTERM from the kernel when the fleet
dies (``workers/deathsig.py``): a Celery worker starts its warm shutdown then. With nobody
left to SIGKILL it after ``celery.shutdown_grace_seconds``, a shutdown that cannot finish (the
broker gone with the fleet, reconnecting for ever) would leave it running. The fleet sets
``CRYPTO_AI_ORPHAN_GRACE`` (and its pid, ``CRYPTO_AI_ORPHAN_PARENT``) in its children's
environment; a worker or beat that sees it
watches its parent and, once orphaned, SIGKILLs its own process group (its pool) after that
many seconds. Processes started any other way (systemd, Kubernetes, a shell) do not watch.
"""

from __future__ import annotations

import os
import signal
import threading
import time

ORPHAN_GRACE_ENV = "CRYPTO_AI_ORPHAN_GRACE"
#: The fleet's pid: a process orphaned before it starts watching is caught too.
ORPHAN_PARENT_ENV = "CRYPTO_AI_ORPHAN_PARENT"


def watch_parent(grace: float, poll: float = 1.0, parent: int | None = None) -> threading.Thread:
    """Start a daemon thread that ends this process ``grace`` seconds after its parent
    (``parent``, else the one it has now) is gone."""
    parent = os.getppid() if parent is None else parent

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        time.sleep(grace)  # the warm shutdown's grace period, as the fleet would give it
        if os.getpgrp() == os.getpid():  # a session of its own: the pool is in its group
            os.killpg(os.getpid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)

    thread = threading.Thread(target=watch, name="orphan-watch", daemon=True)
    thread.start()
    return thread


def watch_if_asked() -> threading.Thread | None:
    """Watch the parent when the fleet asked (``CRYPTO_AI_ORPHAN_GRACE``); else do nothing."""
    raw, parent = os.environ.get(ORPHAN_GRACE_ENV), os.environ.get(ORPHAN_PARENT_ENV, "")
    if not raw:
        return None
    try:
        grace = max(0.0, float(raw))
    except ValueError:
        return None  # not the fleet's value: leave the process as it is
    return watch_parent(grace, parent=int(parent) if parent.isdigit() else None)
