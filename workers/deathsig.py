"""Run a command that dies with its parent: ``python deathsig.py PARENT_PID -- COMMAND...``.

On Linux the process asks the kernel for SIGTERM when its parent dies
(``prctl(PR_SET_PDEATHSIG, SIGTERM)``), checks that ``PARENT_PID`` is still its parent (it may
have died before the request), then replaces itself with ``COMMAND`` (the request survives
``execve``). A Celery worker takes that SIGTERM as a warm shutdown, which also stops its pool.

Elsewhere (macOS, Windows) there is no such request: the command is started as is, and a
parent killed outright (SIGKILL) leaves it running. Signals the parent can catch (SIGINT,
SIGTERM, SIGHUP) still stop everything, through :meth:`workers.fleet.Fleet.stop`.

The file is run by path and imports the standard library only, so that wrapping a command
costs a bare interpreter start, not the fleet's imports.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def guarded(command: list[str], python: str = sys.executable) -> list[str]:
    """Return ``command`` wrapped so that it gets SIGTERM when this process dies (Linux).

    Warning: the kernel sends the signal when the *thread* that started the child ends, so
    start guarded children from a thread that lives as long as the process (the main one).
    """
    return [python, "-I", "-S", os.path.abspath(__file__), str(os.getpid()), "--", *command]


def die_with_parent(parent: int, sig: int = signal.SIGTERM) -> bool:
    """Ask for ``sig`` when the parent dies; return False if ``parent`` is already gone.

    Return True without asking on a platform that has no ``prctl`` (the caller runs anyway).
    """
    if not sys.platform.startswith("linux"):
        return True
    libc = ctypes.CDLL(None, use_errno=True)  # the running interpreter links libc
    if libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        return True  # the kernel refused: run unguarded rather than not at all
    return os.getppid() == parent


def main(argv: list[str]) -> int:
    """Arm the parent-death signal and exec the command; return 2 on a bad command line."""
    if len(argv) < 3 or argv[1] != "--" or not argv[0].isdigit():
        print("usage: deathsig.py PARENT_PID -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    if not die_with_parent(int(argv[0])):
        return 128 + signal.SIGTERM  # as if the signal had come: the parent is gone
    command = argv[2:]
    os.execvp(command[0], command)  # noqa: S606 - the fleet's own argv, never a shell
    return 127  # execvp does not return


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
