"""One Redis server for sync and async code: a blocking client and one asyncio client per loop.

The fleet's async code (the request path: limiter, breakers, cache, coalescing, batching,
order claims) talks to Redis with ``redis.asyncio`` and never blocks its event loop; sync
code (Celery task bodies, status views, the seed's blocking ``acquire``) uses the blocking
client. An asyncio client's connections belong to the loop that opened them, so
:meth:`RedisClients.aio` keeps one per running loop (a worker process has one; each
``asyncio.run`` in a script or test gets its own), built from the same connection settings.

:class:`Script` is one Lua script for both: EVALSHA, loading the script again after a
``SCRIPT FLUSH`` or a failover.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import weakref
from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio
import redis.exceptions

#: The sync connection class for each asyncio one (same arguments, blocking sockets).
_SYNC_CONNECTIONS: dict[type[Any], type[Any]] = {
    redis.asyncio.Connection: redis.Connection,
    redis.asyncio.SSLConnection: redis.SSLConnection,
    redis.asyncio.UnixDomainSocketConnection: redis.UnixDomainSocketConnection,
}
_ASYNC_CONNECTIONS = {sync: aio for aio, sync in _SYNC_CONNECTIONS.items()}
# Retry objects and connect callbacks are sync or async by kind: each side uses its defaults.
_OWN_KIND_KWARGS = ("retry", "redis_connect_func")


def sync_client(client: redis.Redis | redis.asyncio.Redis) -> redis.Redis:
    """Return ``client``, or for an asyncio client a sync one on the same server and settings.

    Replies are bytes, as the fleet's own clients return them, whatever ``decode_responses``
    says.
    """
    if isinstance(client, redis.Redis):
        return client
    if not isinstance(client, redis.asyncio.Redis):
        raise TypeError(
            f"expected a redis.Redis or redis.asyncio.Redis client, got {type(client).__name__}"
        )
    pool = client.connection_pool
    connection = _SYNC_CONNECTIONS.get(pool.connection_class)
    if connection is None:
        raise TypeError(
            f"cannot derive a sync client from {pool.connection_class.__name__} connections; "
            "pass a redis.Redis"
        )
    kwargs = _accepted(connection, pool.connection_kwargs)
    sync_pool = redis.ConnectionPool(
        connection_class=connection, max_connections=pool.max_connections, **kwargs
    )
    return redis.Redis(connection_pool=sync_pool)


_PARAMETERS: dict[type[Any], frozenset[str]] = {}


def _parameters(connection: type[Any]) -> frozenset[str]:
    if connection not in _PARAMETERS:
        names: set[str] = set()
        for cls in connection.__mro__:
            init = cls.__dict__.get("__init__")
            if init is not None:
                names |= set(inspect.signature(init).parameters)
        _PARAMETERS[connection] = frozenset(names - {"self", "args", "kwargs"})
    return _PARAMETERS[connection]


def _accepted(connection: type[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Return the connection settings ``connection`` takes (TLS options differ by kind)."""
    known = _parameters(connection)
    kept = {k: v for k, v in kwargs.items() if k in known and k not in _OWN_KIND_KWARGS}
    kept["decode_responses"] = False
    return kept


def async_client(client: redis.Redis) -> redis.asyncio.Redis:
    """Return a new asyncio client on the same server and settings as ``client``."""
    pool = client.connection_pool
    connection = _ASYNC_CONNECTIONS.get(pool.connection_class)
    if connection is None:
        raise TypeError(
            f"cannot derive an asyncio client from {pool.connection_class.__name__} connections"
        )
    kwargs = _accepted(connection, pool.connection_kwargs)
    aio_pool = redis.asyncio.ConnectionPool(
        connection_class=connection, max_connections=pool.max_connections, **kwargs
    )
    return redis.asyncio.Redis(connection_pool=aio_pool)


class RedisClients:
    """The blocking client of a server and an asyncio client for each running event loop."""

    def __init__(self, client: redis.Redis | redis.asyncio.Redis) -> None:
        self.sync = sync_client(client)
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.asyncio.Redis]
        self._loops = weakref.WeakKeyDictionary()

    def aio(self) -> Any:
        """Return the asyncio client of the running loop (opened on first use).

        A ``redis.asyncio.Redis``, typed Any: redis-py types every reply as "awaitable or
        value" for both client kinds, which no caller can use as it is.
        """
        loop = asyncio.get_running_loop()
        client = self._loops.get(loop)
        if client is None:
            client = self._loops[loop] = async_client(self.sync)
        return client

    async def aclose(self) -> None:
        """Close the running loop's asyncio client (the next use opens a new one)."""
        client = self._loops.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    def script(self, text: str) -> Script:
        """Return ``text`` as a script runnable from sync and async code."""
        return Script(self, text)


class Script:
    """A Lua script run by SHA, loaded again when the server lost it."""

    def __init__(self, clients: RedisClients, text: str) -> None:
        self.clients, self.text = clients, text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()
        self._sync = clients.sync.register_script(text)

    def __call__(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run the script with the blocking client."""
        return self._sync(keys=list(keys), args=list(args))

    async def run(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run the script with the running loop's asyncio client."""
        client = self.clients.aio()
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            await client.script_load(self.text)
            return await client.evalsha(self.sha, len(keys), *keys, *args)
