"""The alert window: failures a moment ago count, whatever bucket edge lies between."""

from __future__ import annotations

import fakeredis
import pytest

from core.keys import KeySpace
from monitoring import fleet_stats


def test_a_window_counts_the_last_seconds_across_a_bucket_edge(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, keys = fakeredis.FakeRedis(), KeySpace("t:")
    record = fleet_stats.listener(client, keys)
    clock = {"now": 1_000_009.8}
    monkeypatch.setattr(fleet_stats.time, "time", lambda: clock["now"])
    for outcome in ("RetryableError", "RetryableError", "ok"):
        record("exchange.request", {"outcome": outcome, "seconds": 0.05})
    clock["now"] = 1_000_010.1  # 0.3 s later, past a 10-second edge
    reading = fleet_stats.read(client, keys, window=10)
    assert (reading.requests, reading.errors) == (3, 2)
    clock["now"] = 1_000_021.0  # 11 s later: the window has let them go
    assert fleet_stats.read(client, keys, window=10).requests == 0
