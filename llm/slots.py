"""``llm.max_concurrency``: at most N calls in flight to the LLM server across the fleet.

A semaphore in Redis (``llm/slot.lua``): a sorted set of holders scored by when their lease
ends, on the Redis clock. A call takes a slot before it is sent and gives it back when it
ends, however it ends; a lease outlives the call's timeout by :data:`LEASE_GRACE` only, so a
worker killed mid-call frees its slot soon after. Waiting for a slot counts against the call's
timeout: a call that gets none in time raises :class:`LLMSlotError` and falls to the rules.

Warning: with a limiter on an in-memory backend (tests, a single process) the semaphore is
this process's own, not the fleet's.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources

from agents.llm import LLMBudgetError
from core.keys import KeySpace
from ratelimit.backends.clients import RedisClients, Script
from ratelimit.manager import ExchangeRateLimitManager

#: How long a lease outlives the call's timeout: a dead holder's slot is free after this.
LEASE_GRACE = 5.0
#: The first and the longest pause between two tries for a slot.
FIRST_PAUSE, LONGEST_PAUSE = 0.02, 0.25


class LLMSlotError(LLMBudgetError):
    """No slot of ``llm.max_concurrency`` became free within the call's timeout."""

    kind = "llm server busy"


def slots_key(keys: KeySpace) -> str:
    """Return the sorted set of the LLM server's slot holders (beside the llm limiter pools)."""
    return keys.llm_slots()


class Slots:
    """At most ``limit`` holders at once, fleet-wide on Redis or within this process."""

    def __init__(
        self,
        limit: int,
        clients: RedisClients | None = None,
        keys: KeySpace | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.limit = limit
        self._clients = clients
        self._key = slots_key(keys or KeySpace())
        self._script: Script | None = None
        self._local: asyncio.Semaphore | None = None
        self._clock = clock

    @classmethod
    def for_limiter(cls, limit: int, limiter: ExchangeRateLimitManager | None) -> Slots:
        """Return slots on the limiter's Redis (fleet-wide), or this process's without one."""
        from ratelimit.backends.redis import RedisBackend

        backend = limiter.backend if limiter is not None else None
        if isinstance(backend, RedisBackend):
            return cls(limit, backend.clients, backend.keys)
        return cls(limit)

    @asynccontextmanager
    async def held(self, deadline: float) -> AsyncIterator[float]:
        """Hold one slot for the block; yield the seconds waited for it.

        ``deadline`` is on the running loop's clock; raises LLMSlotError when it passes first.
        """
        loop = asyncio.get_running_loop()
        clock = self._clock or loop.time
        start = clock()
        if self._clients is None:
            async with self._local_slot(deadline - start):
                yield clock() - start
            return
        holder = uuid.uuid4().hex
        await self._take(holder, deadline, clock)
        try:
            yield clock() - start
        finally:
            # shielded: a cancelled call still gives its slot back
            await asyncio.shield(self._give(holder))

    async def _take(self, holder: str, deadline: float, clock: Callable[[], float]) -> None:
        pause = FIRST_PAUSE
        while True:
            lease_ms = int((max(deadline - clock(), 0.0) + LEASE_GRACE) * 1000)
            if await self._run(holder, "take", lease_ms):
                return
            left = deadline - clock()
            if left <= 0:
                raise self._busy()
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, LONGEST_PAUSE)

    async def _give(self, holder: str) -> None:
        await self._run(holder, "give", 0)

    async def _run(self, holder: str, op: str, lease_ms: int) -> bool:
        assert self._clients is not None
        if self._script is None:
            text = resources.files("llm").joinpath("slot.lua").read_text(encoding="utf-8")
            self._script = self._clients.script(text)
        return bool(await self._script.run([self._key], [holder, op, self.limit, lease_ms]))

    @asynccontextmanager
    async def _local_slot(self, wait: float) -> AsyncIterator[None]:
        if self._local is None:
            self._local = asyncio.Semaphore(self.limit)
        try:
            await asyncio.wait_for(self._local.acquire(), max(wait, 0.0))
        except TimeoutError:
            raise self._busy() from None
        try:
            yield
        finally:
            self._local.release()

    def _busy(self) -> LLMSlotError:
        return LLMSlotError(
            f"no LLM slot became free in time (llm.max_concurrency {self.limit}, all in use)"
        )
