"""The shared response cache and fleet-wide request coalescing, both in Redis.

Cache: JSON values with a TTL; at most ``max_entries`` (the oldest write goes first), kept in
one Lua call so the bound holds with many writers. Entries are stamped with their write time
so a stale answer can say how old it is. Keys share the ``{cache}`` hash tag for Cluster.

Coalescing: the first process to ask for a request takes a short lock and calls upstream;
every other process asking for the same request meanwhile waits for the result the first
one leaves behind, so N identical requests cost one upstream call. The result stays for
``result_ttl`` (0.25 s by default), so requests arriving just after the answer share it too:
a fleet woken by the same beat tick does not arrive at exactly the same instant.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from core.keys import KeySpace
from exchanges.request import request_digest
from ratelimit.backends.clients import RedisClients
from resilience.scripts import lua

__all__ = ["CachedValue", "Coalescer", "ResponseCache", "request_digest"]

T = TypeVar("T")


@dataclass(frozen=True)
class CachedValue:
    """A cached response and when it was stored (wall-clock seconds)."""

    value: Any
    stored_at: float

    def age(self) -> float:
        """Return the entry's age in seconds."""
        return max(0.0, time.time() - self.stored_at)


class ResponseCache:
    """A bounded TTL cache of JSON values in Redis."""

    def __init__(self, clients: RedisClients, keys: KeySpace, max_entries: int = 10000) -> None:
        self.clients, self.keys, self.max_entries = clients, keys, max_entries
        self._set = clients.script(lua("cache_set.lua"))

    async def put(self, digest: str, value: Any, ttl: float) -> int:
        """Store ``value`` for ``ttl`` seconds; return how many old entries were evicted."""
        payload = json.dumps({"v": value, "t": time.time()}, default=str)
        keys = [self.keys.cache_entry(digest), self.keys.cache_index(), self.keys.cache_sequence()]
        args = [payload, max(1, int(ttl * 1000)), self.max_entries]
        return int(await self._set.run(keys, args))

    async def get(self, digest: str) -> CachedValue | None:
        """Return the cached value, or None."""
        raw = await self.clients.aio().get(self.keys.cache_entry(digest))
        if raw is None:
            return None
        data = json.loads(raw)
        return CachedValue(data["v"], float(data["t"]))


class Coalescer:
    """Make identical in-flight requests anywhere in the fleet share one upstream call."""

    def __init__(
        self,
        clients: RedisClients,
        keys: KeySpace,
        *,
        lock_ttl: float = 30.0,
        result_ttl: float = 0.25,
        poll: float = 0.005,
    ) -> None:
        self.clients, self.keys = clients, keys
        self.lock_ttl, self.result_ttl, self.poll = lock_ttl, result_ttl, poll
        self._release = clients.script(lua("release_if_ours.lua"))

    async def run(self, digest: str, call: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """Return (result, shared): the leader calls upstream, followers get its result.

        Warning: results pass through Redis as JSON, so they must be JSON-serialisable.
        A follower whose leader fails or vanishes makes the call itself.
        """
        lock, result_key = self.keys.coalesce_lock(digest), self.keys.coalesce_result(digest)
        token = uuid.uuid4().hex
        client = self.clients.aio()
        while True:
            recent = await client.get(result_key)
            if recent is not None:
                return json.loads(recent)["r"], True
            if await client.set(lock, token, nx=True, px=int(self.lock_ttl * 1000)):
                return await self._lead(lock, result_key, token, call), False
            waited = await self._follow(lock, result_key)
            if waited is not None:
                return waited, True

    async def _lead(
        self, lock: str, result_key: str, token: str, call: Callable[[], Awaitable[T]]
    ) -> T:
        client = self.clients.aio()
        try:
            result = await call()
            text = json.dumps({"r": result}, default=str)
            await client.set(result_key, text, px=int(self.result_ttl * 1000))
            return result
        finally:
            # one compare-and-delete: a lock that lapsed and went to another leader stays
            await asyncio.shield(self._release.run([lock], [token]))

    async def _follow(self, lock: str, result_key: str) -> Any:
        client = self.clients.aio()
        deadline = time.monotonic() + self.lock_ttl
        while time.monotonic() < deadline:
            raw = await client.get(result_key)
            if raw is not None:
                return json.loads(raw)["r"]
            if not await client.exists(lock):
                raw = await client.get(result_key)
                return None if raw is None else json.loads(raw)["r"]
            await asyncio.sleep(self.poll)
        return None
