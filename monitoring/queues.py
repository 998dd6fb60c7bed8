"""Queue depths from the broker (kombu's Redis transport layout)."""

from __future__ import annotations

import redis

from core.keys import KeySpace

# kombu's Redis transport keeps one list per priority step; step 0 is the bare queue name.
_PRIORITY_STEPS = (0, 3, 6, 9)
_PRIORITY_SEP = "\x06\x16"


def queue_depths(client: redis.Redis, keys: KeySpace, queues: tuple[str, ...]) -> dict[str, int]:
    """Return the number of messages waiting in each queue (all priority steps counted)."""
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        for step in _PRIORITY_STEPS:
            pipe.llen(keys.prefix + (queue if step == 0 else f"{queue}{_PRIORITY_SEP}{step}"))
    lengths = pipe.execute()
    steps = len(_PRIORITY_STEPS)
    return {q: sum(lengths[i * steps : (i + 1) * steps]) for i, q in enumerate(queues)}
