"""In-process events: what lower layers report, for monitoring (and tracing) to observe.

Exchange access, the limiter, breakers and agents ``emit`` small named events; the
monitoring layer subscribes and turns them into metrics. Lower layers thus never import the
layers that watch them. A listener that fails is logged and never breaks the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

Listener = Callable[[str, Mapping[str, Any]], None]
_listeners: list[Listener] = []


def subscribe(listener: Listener) -> None:
    """Call ``listener(event, fields)`` for every event from now on (once per listener)."""
    if listener not in _listeners:
        _listeners.append(listener)


def unsubscribe(listener: Listener) -> None:
    """Stop calling ``listener``."""
    if listener in _listeners:
        _listeners.remove(listener)


def emit(event: str, **fields: Any) -> None:
    """Report an event to every listener."""
    for listener in list(_listeners):
        try:
            listener(event, fields)
        except Exception:  # a broken observer must not break trading
            log.exception("event listener failed on %s", event)
