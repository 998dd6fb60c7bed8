"""kombu's Redis transport, made to ride out a Redis restart (``broker_transport`` names it).

With late acknowledgement, a message a worker fetched sits in Redis's ``unacked`` hash
until the worker acknowledges it. When Redis goes away, kombu's stock transport

- tries to put the channel's unacknowledged messages back on their queues while closing the
  lost connection, which fails with Redis away, and leaves them for ``restore_visible``:
  the chains they belong to stall for ``visibility_timeout`` (an hour by default);
- restores or acknowledges on a channel of the closed connection, whose transport has
  forgotten its address: ``AttributeError: 'NoneType' object has no attribute
  'hostname'`` escapes Celery's error handling and the worker exits ("Unrecoverable
  error").

Here both are remembered per process and per broker (host, port, db, key prefix) and
settled on the first channel opened after the reconnect: the acknowledgements are applied,
then the messages neither acknowledged nor running any more are put back on their queues.

Warning: a task that finished just before the loss but whose acknowledgement never left
the worker is delivered again (tasks are idempotent; acks-late semantics).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from kombu.transport import redis as _kombu_redis
from kombu.transport import virtual as _virtual

log = logging.getLogger(__name__)

# kombu is untyped: its classes are used as Any here
kombu_redis: Any = _kombu_redis
virtual: Any = _virtual

_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    kombu_redis.get_redis_ConnectionError(),
    OSError,
)


@dataclass
class _Unsettled:
    """Delivery tags of one broker left over from lost connections."""

    acks: set[str] = field(default_factory=set)
    restores: set[str] = field(default_factory=set)


_lock = threading.Lock()
_unsettled: dict[tuple[Any, ...], _Unsettled] = {}


def _broker_key(channel: Any) -> tuple[Any, ...]:
    # the pid: a forked pool process inherits the dict but none of the deliveries
    params = channel._unsettled_params
    host, port, db = params.get("host"), params.get("port"), params.get("db")
    return (os.getpid(), host, port, db, channel.global_keyprefix)


def _unsettled_of(channel: Any) -> _Unsettled:
    with _lock:
        return _unsettled.setdefault(_broker_key(channel), _Unsettled())


def unsettled_counts() -> dict[str, int]:
    """Return how many acknowledgements and restores wait for Redis in this process."""
    with _lock:
        return {
            "acks": sum(len(u.acks) for u in _unsettled.values()),
            "restores": sum(len(u.restores) for u in _unsettled.values()),
        }


class QoS(kombu_redis.QoS):  # type: ignore[misc]
    """Acknowledge and restore through any later connection when this one is gone."""

    def ack(self, delivery_tag: str) -> None:
        """Acknowledge now, or once Redis answers again (the message stays unacknowledged)."""
        if not self._lost():
            try:
                super().ack(delivery_tag)
                return
            except _CONNECTION_ERRORS:
                pass
        self._defer_ack(delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        """Reject now, or once Redis answers again."""
        if not self._lost():
            try:
                super().reject(delivery_tag, requeue=requeue)
                return
            except _CONNECTION_ERRORS:
                pass
        if requeue:
            unsettled = _unsettled_of(self.channel)
            with _lock:
                unsettled.restores.add(delivery_tag)
            virtual.QoS.ack(self, delivery_tag)
        else:
            self._defer_ack(delivery_tag)

    def restore_unacked(self, client: Any = None) -> None:
        """Put the unacknowledged messages back, or remember them until Redis is back."""
        try:
            super().restore_unacked(client)
        except _CONNECTION_ERRORS as exc:
            unsettled = _unsettled_of(self.channel)
            with _lock:
                unsettled.restores.update(str(tag) for tag in self._delivered)
            log.warning(
                "Redis away (%s): %d unacknowledged messages go back on their queues "
                "after the reconnect",
                exc,
                len(self._delivered),
            )
            self._delivered.clear()

    def _lost(self) -> bool:
        return bool(self.channel.closed or self.channel.connection.client is None)

    def _defer_ack(self, delivery_tag: str) -> None:
        unsettled = _unsettled_of(self.channel)
        with _lock:
            unsettled.acks.add(delivery_tag)
            unsettled.restores.discard(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)
        log.warning("Redis away: acknowledgement of %s deferred until the reconnect", delivery_tag)


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    """A Redis channel whose QoS survives the loss of its connection."""

    QoS = QoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._saved_params: dict[bool, dict[str, Any]] = {}
        super().__init__(*args, **kwargs)
        self._unsettled_params = dict(self._connparams())

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        # kombu forgets a closed connection's address; a restore or an ack on its
        # channels then fails with AttributeError instead of a connection error
        if self.connection.client is None:
            saved = self._saved_params.get(asynchronous)
            if saved is None:
                raise _CONNECTION_ERRORS[0]("the channel's broker connection is closed")
            return dict(saved)
        params: dict[str, Any] = super()._connparams(asynchronous=asynchronous)
        self._saved_params[asynchronous] = dict(params)
        return params

    def settle(self) -> None:
        """Apply acknowledgements and restores left over from lost connections."""
        unsettled = _unsettled_of(self)
        with _lock:
            acks, restores = set(unsettled.acks), set(unsettled.restores - unsettled.acks)
        if not acks and not restores:
            return
        qos = self.qos
        with self.conn_or_acquire() as client:
            for tag in acks:
                qos._remove_from_indices(tag, client.pipeline()).execute()
            for tag in restores:
                qos.restore_by_tag(tag, client=client)
        with _lock:
            unsettled.acks -= acks
            unsettled.restores -= restores
        log.warning(
            "reconnected to Redis: %d deferred acknowledgements applied, %d messages restored",
            len(acks),
            len(restores),
        )


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    """kombu's Redis transport with :class:`Channel`; settles leftovers on a new channel."""

    Channel = Channel

    def create_channel(self, connection: Any) -> Any:
        """Open a channel; first settle what lost connections left (if Redis answers)."""
        channel = super().create_channel(connection)
        try:
            channel.settle()
        except _CONNECTION_ERRORS as exc:
            log.warning("Redis away (%s): leftovers settle on the next channel", exc)
        return channel
