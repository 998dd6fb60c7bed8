"""Fleet-wide batching: same-kind requests from any process, merged into one batched call.

The first process to ask for, say, a Binance ticker opens a batch in Redis and leads it;
every request of the same kind from any process in the next ``window`` seconds joins it (up
to ``max_size`` items, which closes it at once; a batch nobody joined for ``idle`` seconds
closes too, so a lone request waits ``idle``, not the whole window, and a burst from the
fleet is taken whole however long it lasts within the window). When it closes, the leader sends
the batched call(s) for every item that joined and leaves each item's outcome, data or
error, in Redis; every caller takes its own slice. Because the leader calls only after the
batch has closed, every answer was read after its caller asked: batching never serves data
older than the request, unlike a cache.

A follower whose leader vanishes (its lease lapses without outcomes) gets ``None`` and
makes the single call itself, so a killed worker costs latency, never an answer.

Keys: ``{batch:<kind>}:...`` (see ``core/keys.py``), one hash tag per request kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from core import errors as error_tree
from core.keys import KeySpace
from ratelimit.backends.clients import RedisClients
from resilience.scripts import lua

#: What the leader's work returns: per item, the data or the error it ended in.
Outcomes = dict[str, Any]


@dataclass(frozen=True)
class Joined:
    """Where a request landed: its batch, whether it leads, and the batch's state."""

    batch_id: str
    leader: bool
    size: int
    closes_in: float


def encode_outcome(outcome: Any) -> str:
    """Return one item's outcome as JSON: ``{"v": data}`` or ``{"e": {...}}``."""
    if isinstance(outcome, BaseException):
        return json.dumps(
            {
                "e": {
                    "type": type(outcome).__name__,
                    "message": str(outcome),
                    "retry_after": getattr(outcome, "retry_after", None),
                }
            }
        )
    return json.dumps({"v": outcome}, default=str)


def decode_outcome(raw: bytes | str) -> Any:
    """Return the data of an outcome, or the error it carried rebuilt as our error class."""
    data = json.loads(raw)
    if "e" not in data:
        return data["v"]
    error = data["e"]
    name, message = str(error["type"]), str(error["message"])
    if name == "TimeoutError":
        return TimeoutError(message)
    cls = getattr(error_tree, name, None)
    if not (isinstance(cls, type) and issubclass(cls, error_tree.CryptoAIError)):
        return error_tree.RetryableError(f"{name}: {message}")
    if issubclass(cls, error_tree.BackOffError | error_tree.CircuitOpenError):
        return cls(message, float(error.get("retry_after") or 0.0))
    if issubclass(cls, error_tree.ConfigError):
        return error_tree.InvalidRequestError(message)
    return cls(message)


class FleetBatcher:
    """Merge same-kind requests that arrive within ``window`` seconds anywhere in the fleet."""

    def __init__(
        self,
        clients: RedisClients,
        keys: KeySpace,
        *,
        window: float = 1.0,
        max_size: int = 50,
        idle: float | None = None,
        lease: float = 30.0,
        result_ttl: float = 60.0,
        poll: float = 0.01,
    ) -> None:
        self.clients, self.keys = clients, keys
        self.window, self.max_size = window, max_size
        self.idle = window if idle is None else min(idle, window)
        self.lease, self.result_ttl, self.poll = lease, result_ttl, poll
        self._join = clients.script(lua("batch_join.lua"))
        # close a batch (delete the open pointer) only if it is still the one we lead
        self._close = clients.script(lua("release_if_ours.lua"))

    async def join(self, kind: str, item: str) -> Joined:
        """Add ``item`` to the open batch of ``kind`` (opening one); say where it landed."""
        reply = await self._join.run(
            [self.keys.batch_open(kind)],
            [
                self.keys.batch_base(kind),  # the script names the new batch's keys under it
                uuid.uuid4().hex[:16],
                item,
                self.max_size,
                max(1, int(self.window * 1000)),
                max(1, int(self.lease * 1000)),
            ],
        )
        batch_id, leader, size, left = cast(list[Any], reply)
        text = batch_id.decode() if isinstance(batch_id, bytes) else str(batch_id)
        return Joined(text, bool(leader), int(size), max(0, int(left)) / 1000)

    async def submit(
        self,
        kind: str,
        item: str,
        work: Callable[[list[str]], Awaitable[Outcomes]],
    ) -> Any:
        """Return ``item``'s outcome from the batch it joins: data, or an error to raise.

        ``work`` (run by the leader only) gets every distinct item that joined and returns
        each one's outcome (data or exception). Returns None when the leader vanished
        without an answer; the caller then makes the single request itself.
        """
        joined = await self.join(kind, item)
        if joined.leader:
            return await self._lead(kind, joined, item, work)
        return await self._follow(kind, joined.batch_id, item, joined.closes_in)

    async def _lead(
        self,
        kind: str,
        joined: Joined,
        item: str,
        work: Callable[[list[str]], Awaitable[Outcomes]],
    ) -> Any:
        client, batch = self.clients.aio(), joined.batch_id
        lead, result = self.keys.batch_lead(kind, batch), self.keys.batch_result(kind, batch)
        keeper = asyncio.ensure_future(self._keep_lease(lead))
        try:
            await self._wait_closed(kind, joined)
            members = self.keys.batch_members(kind, batch)
            raw = cast(list[bytes], await client.lrange(members, 0, -1))
            items = list(dict.fromkeys(m.decode() for m in raw))
            outcomes = await work(items)
            missing = error_tree.MalformedResponseError
            encoded = {
                name: encode_outcome(
                    outcomes[name] if name in outcomes else missing(f"no answer for {name}")
                )
                for name in items
            }
            pipe = client.pipeline()
            pipe.hset(result, mapping=encoded)
            pipe.pexpire(result, int(self.result_ttl * 1000))
            await pipe.execute()
            return decode_outcome(encoded[item])
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            await asyncio.shield(client.delete(lead))

    async def _wait_closed(self, kind: str, joined: Joined) -> None:
        """Wait until the batch stops taking members: window over, full, or idle."""
        client = self.clients.aio()
        pointer = self.keys.batch_open(kind)
        members = self.keys.batch_members(kind, joined.batch_id)
        now = time.monotonic()
        deadline, size, last_join = now + joined.closes_in + self.poll, joined.size, now
        while time.monotonic() < deadline:
            await asyncio.sleep(self.poll)
            current = await client.get(pointer)
            if current is None or current.decode() != joined.batch_id:
                return
            grown = int(await client.llen(members))
            if grown != size:
                size, last_join = grown, time.monotonic()
            elif time.monotonic() - last_join >= self.idle:
                await self._close.run([pointer], [joined.batch_id])
                return

    async def _keep_lease(self, lead: str) -> None:
        client = self.clients.aio()
        while True:
            await asyncio.sleep(self.lease / 3)
            await client.pexpire(lead, int(self.lease * 1000))

    async def _follow(self, kind: str, batch: str, item: str, closes_in: float) -> Any:
        """Wait for the leader's outcome for ``item``; None if the leader is gone."""
        client = self.clients.aio()
        lead, result = self.keys.batch_lead(kind, batch), self.keys.batch_result(kind, batch)
        await asyncio.sleep(min(closes_in, self.idle))
        while True:
            raw = await client.hget(result, item)
            if raw is not None:
                return decode_outcome(raw)
            if not await client.exists(lead):
                raw = await client.hget(result, item)
                return None if raw is None else decode_outcome(raw)
            await asyncio.sleep(self.poll)
