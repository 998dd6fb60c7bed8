"""The stop signals of the fleet's entry points (``crypto-ai up``, ``python main.py --once``)."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

#: The signals that stop the fleet (SIGHUP: the terminal or the session went away).
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


@contextlib.contextmanager
def stop_signals(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """Install ``handler`` for every stop signal; restore the previous handlers on exit."""
    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class Interrupted(BaseException):
    """A stop signal ended a one-shot run (a BaseException: no ``except Exception`` eats it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class OnceStopper:
    """The stop-signal handler of a one-shot run.

    While the fleet starts, a signal is only noted (an exception in the middle of starting a
    process could leave that process unrecorded, so never stopped); once ``armed``, it
    interrupts the wait for the workers or the cycle. Later signals are ignored, so that
    :meth:`Fleet.stop` runs to its end.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.armed = False
        self.done = False

    def __call__(self, signum: int, frame: Any) -> None:
        if self.signum is not None or self.done:
            return
        self.signum = signum
        print(f"{signal.Signals(signum).name}: stopping the fleet", file=sys.stderr, flush=True)
        if self.armed:
            raise Interrupted(signum)

    def arm(self) -> None:
        """Let the next signal interrupt; raise at once if one came while disarmed."""
        self.armed = True
        if self.signum is not None:
            raise Interrupted(self.signum)

    def disarm(self) -> None:
        """Ignore every later signal."""
        self.armed = False
        self.done = True
