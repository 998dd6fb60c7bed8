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

import redis

from core import errors as error_tree
from core.keys import KeySpace
from resilience.scripts import lua

#: Close a batch (delete the open pointer) only if it is still the one we lead.
CLOSE_IF_OURS = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

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
        client: redis.Redis,
        keys: KeySpace,
        *,
        window: float = 1.0,
        max_size: int = 50,
        idle: float | None = None,
        lease: float = 30.0,
        result_ttl: float = 60.0,
        poll: float = 0.01,
    ) -> None:
        self.client, self.keys = client, keys
        self.window, self.max_size = window, max_size
        self.idle = window if idle is None else min(idle, window)
        self.lease, self.result_ttl, self.poll = lease, result_ttl, poll
        text = lua("batch_join.lua")
        self._join = client.register_script(text)
        self._close = client.register_script(CLOSE_IF_OURS)

    def _base(self, kind: str) -> str:
        return self.keys.batch_base(kind)

    def join(self, kind: str, item: str) -> Joined:
        """Add ``item`` to the open batch of ``kind`` (opening one); say where it landed."""
        base = self._base(kind)
        reply = self._join(
            keys=[base + "open"],
            args=[
                base,
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
        joined = self.join(kind, item)
        base = self._base(kind) + joined.batch_id
        if joined.leader:
            return await self._lead(kind, base, joined, item, work)
        return await self._follow(base, item, joined.closes_in)

    async def _lead(
        self,
        kind: str,
        base: str,
        joined: Joined,
        item: str,
        work: Callable[[list[str]], Awaitable[Outcomes]],
    ) -> Any:
        keeper = asyncio.ensure_future(self._keep_lease(base + ":lead"))
        try:
            await self._wait_closed(kind, joined)
            raw = cast(list[bytes], self.client.lrange(base + ":members", 0, -1))
            items = list(dict.fromkeys(m.decode() for m in raw))
            outcomes = await work(items)
            missing = error_tree.MalformedResponseError
            encoded = {
                name: encode_outcome(
                    outcomes[name] if name in outcomes else missing(f"no answer for {name}")
                )
                for name in items
            }
            pipe = self.client.pipeline()
            pipe.hset(base + ":result", mapping=encoded)
            pipe.pexpire(base + ":result", int(self.result_ttl * 1000))
            pipe.execute()
            return decode_outcome(encoded[item])
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            self.client.delete(base + ":lead")

    async def _wait_closed(self, kind: str, joined: Joined) -> None:
        """Wait until the batch stops taking members: window over, full, or idle."""
        pointer = self._base(kind) + "open"
        members = self._base(kind) + joined.batch_id + ":members"
        now = time.monotonic()
        deadline, size, last_join = now + joined.closes_in + self.poll, joined.size, now
        while time.monotonic() < deadline:
            await asyncio.sleep(self.poll)
            current = self.client.get(pointer)
            if current is None or current.decode() != joined.batch_id:  # type: ignore[union-attr]
                return
            grown = int(self.client.llen(members))  # type: ignore[arg-type]
            if grown != size:
                size, last_join = grown, time.monotonic()
            elif time.monotonic() - last_join >= self.idle:
                self._close(keys=[pointer], args=[joined.batch_id])
                return

    async def _keep_lease(self, lead: str) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            self.client.pexpire(lead, int(self.lease * 1000))

    async def _follow(self, base: str, item: str, closes_in: float) -> Any:
        """Wait for the leader's outcome for ``item``; None if the leader is gone."""
        await asyncio.sleep(min(closes_in, self.idle))
        while True:
            raw = self.client.hget(base + ":result", item)
            if raw is not None:
                return decode_outcome(cast(bytes, raw))
            if not self.client.exists(base + ":lead"):
                raw = self.client.hget(base + ":result", item)
                return None if raw is None else decode_outcome(cast(bytes, raw))
            await asyncio.sleep(self.poll)
