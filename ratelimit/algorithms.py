"""Pure Python reference of the four limiter algorithms, by weight and with a reserve.

Each algorithm has a state (a small dict), and pure functions of (spec, state, now):
``check`` says whether ``weight`` fits while leaving ``reserve`` untouched, ``charge``
returns the state after spending it, ``observe`` raises the state to a usage the exchange
reported, and ``settle`` re-stamps a sliding-window charge when its request has completed.
``ratelimit/lua/acquire.lua`` and ``settle.lua`` implement the same arithmetic in the same
order; the contract tests feed both the same times and weights and demand the same
decisions.

- token_bucket: ``limit`` tokens, refilled at ``rate``/s; allows bursts up to ``limit``.
- leaky_bucket: a meter that drains at ``rate``/s and holds at most ``limit``; the same
  arithmetic mirrored (level instead of tokens), kept because the seed configures it.
- fixed_window: at most ``limit`` per window aligned to the epoch (so 60 s windows start on
  the minute, 86400 s windows at 00:00 UTC), as Binance counts ORDERS and REQUEST_WEIGHT.
- sliding_window: at most ``limit`` in any window of ``window`` seconds (a log of charges);
  exact, so it never admits more than the limit in any interval of that length.

A sliding-window charge may be *held*: stamped ``hold`` seconds in the future (it counts
while its request is in flight, however long that takes, up to ``hold``), under a
``ticket``, then *settled* when the request completes: re-stamped at the completion time.
The exchange counts a request when it arrives, which is after the admission and before the
response, so a log of completion times is never earlier than the exchange's log of arrival
times: the fleet's limit can be the exchange's, however unevenly the network delays
requests. A request needing a held entry to expire waits one window (the earliest the entry
can expire once settled). A state's entries are (time, weight, ticket), ticket "" when none.
"""

from __future__ import annotations

import math
from typing import Any

from ratelimit.pools import PoolCheck, PoolSpec

State = dict[str, Any]
INF = math.inf


def _refilled_tokens(spec: PoolSpec, state: State, now: float) -> float:
    if not state:
        return spec.limit
    elapsed = max(0.0, now - state["ts"])
    return float(min(spec.limit, state["tokens"] + elapsed * spec.rate))


def _drained_level(spec: PoolSpec, state: State, now: float) -> float:
    if not state:
        return 0.0
    elapsed = max(0.0, now - state["ts"])
    return float(max(0.0, state["level"] - elapsed * spec.rate))


def _window_count(spec: PoolSpec, state: State, now: float) -> tuple[int, float]:
    window_id = math.floor(now / spec.window)
    count = state["count"] if state and state["window_id"] == window_id else 0.0
    return window_id, count


Entry = tuple[float, float, str]


def _live_entries(spec: PoolSpec, state: State, now: float) -> tuple[list[Entry], float]:
    """Return the unexpired entries, oldest first (a sorted set's order), and their sum."""
    entries = sorted(state.get("entries", []) if state else [], key=lambda e: e[0])
    horizon = now - spec.window
    live = [e for e in entries if e[0] > horizon]
    total = state.get("sum", 0.0) if state else 0.0
    for ts, w, _ in entries:  # one subtraction per expired entry, oldest first, as the Lua does
        if ts <= horizon:
            total -= w
    return live, (total if live else 0.0)


def _check_token_bucket(
    spec: PoolSpec, state: State, now: float, weight: float, need: float
) -> PoolCheck:
    tokens = _refilled_tokens(spec, state, now)
    if tokens >= need:
        return PoolCheck(True, 0.0, tokens - weight)
    wait = INF if need > spec.limit else (need - tokens) / spec.rate
    return PoolCheck(False, wait, tokens)


def _check_leaky_bucket(
    spec: PoolSpec, state: State, now: float, weight: float, need: float
) -> PoolCheck:
    level = _drained_level(spec, state, now)
    if level + need <= spec.limit:
        return PoolCheck(True, 0.0, spec.limit - level - weight)
    wait = INF if need > spec.limit else (level + need - spec.limit) / spec.rate
    return PoolCheck(False, wait, spec.limit - level)


def _check_fixed_window(
    spec: PoolSpec, state: State, now: float, weight: float, need: float
) -> PoolCheck:
    window_id, count = _window_count(spec, state, now)
    if count + need <= spec.limit:
        return PoolCheck(True, 0.0, spec.limit - count - weight)
    wait = INF if need > spec.limit else (window_id + 1) * spec.window - now
    return PoolCheck(False, wait, spec.limit - count)


def _check_sliding_window(
    spec: PoolSpec, state: State, now: float, weight: float, need: float
) -> PoolCheck:
    live, total = _live_entries(spec, state, now)
    if total + need <= spec.limit:
        return PoolCheck(True, 0.0, spec.limit - total - weight)
    freed, wait = 0.0, INF
    if need <= spec.limit:
        for ts, w, _ in live:  # the oldest charges expire first; a held one, once settled
            freed += w
            if total - freed + need <= spec.limit:
                wait = min(ts, now) + spec.window - now
                break
    return PoolCheck(False, wait, spec.limit - total)


_CHECKS = {
    "token_bucket": _check_token_bucket,
    "leaky_bucket": _check_leaky_bucket,
    "fixed_window": _check_fixed_window,
    "sliding_window": _check_sliding_window,
}


def check(spec: PoolSpec, state: State, now: float, weight: float, reserve: float) -> PoolCheck:
    """Return whether ``weight`` fits in the pool at ``now`` leaving ``reserve`` unused."""
    return _CHECKS[spec.algorithm](spec, state, now, weight, weight + reserve)


def charge(
    spec: PoolSpec, state: State, now: float, weight: float, *, ticket: str = "", hold: float = 0.0
) -> State:
    """Return the pool's state after spending ``weight`` at ``now``.

    In a sliding window the charge is stamped ``now + hold`` under ``ticket`` (see
    :func:`settle`); the other algorithms ignore both.
    """
    if spec.algorithm == "token_bucket":
        return {"tokens": _refilled_tokens(spec, state, now) - weight, "ts": now}
    if spec.algorithm == "leaky_bucket":
        return {"level": _drained_level(spec, state, now) + weight, "ts": now}
    if spec.algorithm == "fixed_window":
        window_id, count = _window_count(spec, state, now)
        return {"window_id": window_id, "count": count + weight}
    live, total = _live_entries(spec, state, now)
    return {"entries": [*live, (now + hold, weight, ticket)], "sum": total + weight}


def settle(spec: PoolSpec, state: State, now: float, weight: float, ticket: str) -> State:
    """Return the state with the sliding-window charge under ``ticket`` re-stamped at ``now``.

    A charge no longer logged (expired while its request was in flight longer than its
    hold) is logged again at ``now``: its request may have arrived just before. Other
    algorithms are returned unchanged.
    """
    if spec.algorithm != "sliding_window" or not ticket:
        return state
    live, total = _live_entries(spec, state, now)
    for i, (_, w, held) in enumerate(live):
        if held == ticket and w == weight:
            return {"entries": [*live[:i], (now, w, held), *live[i + 1 :]], "sum": total}
    return {"entries": [*live, (now, weight, ticket)], "sum": total + weight}


def observe(spec: PoolSpec, state: State, now: float, used: float) -> State:
    """Return the state raised so that at least ``used`` counts as spent now.

    The exchange's usage headers say what it has counted; when that is more than we have
    (another client on the same IP, a restart, a request we never saw), we adopt it. A
    lower figure changes nothing: our count may include requests still in flight.
    """
    if spec.algorithm == "token_bucket":
        tokens = _refilled_tokens(spec, state, now)
        return {"tokens": min(tokens, spec.limit - used), "ts": now}
    if spec.algorithm == "leaky_bucket":
        return {"level": max(_drained_level(spec, state, now), used), "ts": now}
    if spec.algorithm == "fixed_window":
        window_id, count = _window_count(spec, state, now)
        return {"window_id": window_id, "count": max(count, used)}
    live, total = _live_entries(spec, state, now)
    if used > total:
        return {"entries": [*live, (now, used - total, "")], "sum": used}
    return {"entries": live, "sum": total}
