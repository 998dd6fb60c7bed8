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
import hashlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import redis

from core.keys import KeySpace
from resilience.scripts import lua

T = TypeVar("T")


def request_digest(exchange: str, endpoint: str, params: dict[str, Any] | None) -> str:
    """Return a stable digest of a request (exchange, endpoint, sorted params)."""
    text = json.dumps([exchange, endpoint, params or {}], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


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

    def __init__(self, client: redis.Redis, keys: KeySpace, max_entries: int = 10000) -> None:
        self.client, self.keys, self.max_entries = client, keys, max_entries
        text = lua("cache_set.lua")
        self._set = client.register_script(text)

    def put(self, digest: str, value: Any, ttl: float) -> int:
        """Store ``value`` for ``ttl`` seconds; return how many old entries were evicted."""
        payload = json.dumps({"v": value, "t": time.time()}, default=str)
        keys = [self.keys.cache_entry(digest), self.keys.cache_index(), self.keys.cache_sequence()]
        evicted = self._set(keys=keys, args=[payload, max(1, int(ttl * 1000)), self.max_entries])
        return int(evicted)

    def get(self, digest: str) -> CachedValue | None:
        """Return the cached value, or None."""
        raw = self.client.get(self.keys.cache_entry(digest))
        if raw is None:
            return None
        data = json.loads(cast(bytes, raw))
        return CachedValue(data["v"], float(data["t"]))


class Coalescer:
    """Make identical in-flight requests anywhere in the fleet share one upstream call."""

    def __init__(
        self,
        client: redis.Redis,
        keys: KeySpace,
        *,
        lock_ttl: float = 30.0,
        result_ttl: float = 0.25,
        poll: float = 0.005,
    ) -> None:
        self.client, self.keys = client, keys
        self.lock_ttl, self.result_ttl, self.poll = lock_ttl, result_ttl, poll

    async def run(self, digest: str, call: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """Return (result, shared): the leader calls upstream, followers get its result.

        Warning: results pass through Redis as JSON, so they must be JSON-serialisable.
        A follower whose leader fails or vanishes makes the call itself.
        """
        lock, result_key = self.keys.coalesce_lock(digest), self.keys.coalesce_result(digest)
        token = uuid.uuid4().hex
        while True:
            recent = self.client.get(result_key)
            if recent is not None:
                return json.loads(cast(bytes, recent))["r"], True
            if self.client.set(lock, token, nx=True, px=int(self.lock_ttl * 1000)):
                return await self._lead(lock, result_key, token, call), False
            waited = await self._follow(lock, result_key)
            if waited is not None:
                return waited, True

    async def _lead(
        self, lock: str, result_key: str, token: str, call: Callable[[], Awaitable[T]]
    ) -> T:
        try:
            result = await call()
            self.client.set(
                result_key, json.dumps({"r": result}, default=str), px=int(self.result_ttl * 1000)
            )
            return result
        finally:
            if self.client.get(lock) == token.encode():
                self.client.delete(lock)

    async def _follow(self, lock: str, result_key: str) -> Any:
        deadline = time.monotonic() + self.lock_ttl
        while time.monotonic() < deadline:
            raw = self.client.get(result_key)
            if raw is not None:
                return json.loads(cast(bytes, raw))["r"]
            if not self.client.exists(lock):
                raw = self.client.get(result_key)
                return None if raw is None else json.loads(cast(bytes, raw))["r"]
            await asyncio.sleep(self.poll)
        return None
