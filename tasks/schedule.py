"""Scheduled work: celery beat sends these; each is safe to receive twice.

Two beat processes (a mistake, or a failover overlap) would send every entry twice; each
scheduled run therefore claims its time slot in Redis first, and a second claim for the same
slot is skipped. So the fleet analyses once per slot however many beats run.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import shared_task

from core.tracing import span
from tasks import context
from tasks.runs import release, watchlist_run

log = logging.getLogger(__name__)


def claim_slot(name: str, every: float) -> bool:
    """Return True if this call is the first for the current ``every``-second slot."""
    rt = context.current()
    slot = int(time.time() // every)
    key = rt.keyspace().schedule_slot(name, slot)
    return bool(rt.redis_client().set(key, "1", nx=True, ex=int(every * 3) + 60))


@shared_task(name="analysis.run")
def run_watchlist(every: float | None = None) -> dict[str, Any]:
    """Start one analysis run over the watchlist (once per slot); return its id.

    ``every`` is the slot length: beat passes ``schedules.analysis.every``; without it the
    configured schedule's (300 s when there is none).
    """
    rt = context.current()
    if every is None:
        entry = rt.config().schedules.get("analysis")
        every = entry.every if entry is not None else 300.0
    if not claim_slot("analysis.run", every):
        log.info("analysis run for this slot already started by another beat; skipping")
        return {"skipped": True}
    with span("analysis.run", scheduled=True) as root:
        run_id, canvas = watchlist_run(rt.config())
        root.set_attribute("run_id", run_id)
        rt.redis_client().zadd(rt.keyspace().runs_index(), {run_id: time.time()})
        # nobody in this worker waits for the run: do not keep its results subscribed
        release(canvas.apply_async(add_to_parent=False))
    log.info("analysis run %s started", run_id)
    return {"run_id": run_id}
