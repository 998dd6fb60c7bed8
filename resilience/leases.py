"""Fleet-wide leases in Redis: one holder at a time, released or lapsed, never stolen.

A lease is a key written with ``SET NX PX`` whose value names its holder. Only the holder
extends, replaces or releases it (one Lua compare-and-act, ``resilience/lua/lease.lua``);
a holder that dies leaves it to lapse after its TTL. The order gate claims client order ids
and serialises each symbol's orders with them.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, cast

from ratelimit.backends.clients import RedisClients
from resilience.scripts import lua


class Lease:
    """One lease key; ``acquire`` it, then ``extend``, ``replace`` or ``release`` it."""

    def __init__(self, clients: RedisClients, key: str, ttl: float, **fields: Any) -> None:
        self.clients, self.key, self.ttl = clients, key, ttl
        self.value = json.dumps({"holder": uuid.uuid4().hex, "at": time.time(), **fields})
        self._script = clients.script(lua("lease.lua"))

    def _ms(self, seconds: float | None = None) -> int:
        return max(1, int((self.ttl if seconds is None else seconds) * 1000))

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it; return True when taken."""
        return bool(await self.clients.aio().set(self.key, self.value, nx=True, px=self._ms()))

    async def held_by_other(self) -> dict[str, Any] | None:
        """Return the current holder's record, or None when the key is free or ours."""
        raw = cast(bytes | None, await self.clients.aio().get(self.key))
        if raw is None or raw.decode() == self.value:
            return None
        return cast(dict[str, Any], json.loads(raw))

    async def extend(self, seconds: float | None = None) -> bool:
        """Push the lease's expiry to ``seconds`` from now; False if it is no longer ours."""
        return bool(await self._script.run([self.key], [self.value, "extend", self._ms(seconds)]))

    async def replace(self, seconds: float, **fields: Any) -> bool:
        """Turn our lease into a record kept ``seconds`` (no longer a lease anyone waits on)."""
        record = json.dumps({**json.loads(self.value), **fields}, default=str)
        args = [self.value, "replace", self._ms(seconds), record]
        done = bool(await self._script.run([self.key], args))
        if done:
            self.value = record
        return done

    async def release(self) -> bool:
        """Give the lease up; False if it had lapsed or was never ours."""
        return bool(await self._script.run([self.key], [self.value, "release"]))


async def wait_while_held(
    lease: Lease,
    settled: Callable[[dict[str, Any]], bool],
    timeout: float,
    *,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    poll: float = 0.05,
) -> dict[str, Any] | None:
    """Wait until the lease is free (return None) or its record is ``settled`` (return it).

    Raises TimeoutError if another holder keeps it longer than ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        record = await lease.held_by_other()
        if record is None:
            return None
        if settled(record):
            return record
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{lease.key} is still held after {timeout:.0f}s")
        await sleep(poll)
