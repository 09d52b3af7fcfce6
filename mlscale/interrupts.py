"""Ctrl-C and SIGTERM unwind a command the same way, so its children are stopped.

The commands that start servers, Locust and ``mlflow models serve`` start each
in a session of its own (so a terminal's Ctrl-C reaches only the command, which
then stops them in order). Without a handler, SIGTERM (``kill``, a CI runner's
timeout, ``systemd stop``) ends the command at once and skips every ``finally``
block: the children keep running. Here SIGTERM raises ``KeyboardInterrupt``
like Ctrl-C, so both run the same clean-up; a repeated signal during the
clean-up is ignored, so a second Ctrl-C cannot cut it short and leave a child.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass


@dataclass
class Caught:
    """The signal that stopped the block, once one has."""

    signum: int | None = None

    @property
    def name(self) -> str:
        return "Ctrl-C" if self.signum in (None, signal.SIGINT) else signal.Signals(self.signum).name

    @property
    def exit_status(self) -> int:
        # The shell's convention for a command ended by a signal.
        return 128 + (self.signum or signal.SIGINT)


@contextmanager
def signals_unwind() -> Iterator[Caught]:
    """Within the block, SIGINT and SIGTERM raise KeyboardInterrupt, once."""
    caught = Caught()

    def handle(signum: int, frame: object) -> None:
        if caught.signum is not None:
            return  # already unwinding: let the clean-up finish
        caught.signum = signum
        raise KeyboardInterrupt

    watched = [signal.SIGTERM]
    # A SIGINT ignored on purpose (a background job of a script) stays ignored.
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        watched.append(signal.SIGINT)
    previous = {signum: signal.signal(signum, handle) for signum in watched}
    try:
        yield caught
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def stop_descendants(grace_s: float = 10.0) -> list[int]:
    """SIGTERM, then SIGKILL after ``grace_s``, to every process this one started
    that is still running; their pids.

    The last line of defence after an interrupt: each step stops its own children
    in a ``finally`` block, but a signal that lands between a child's start and
    the ``try`` that guards it would otherwise leave that child running.
    """
    # psutil (10 ms) only once interrupted: the command line imports this module at
    # every start.
    import psutil

    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return []
    for child in children:
        with suppress(psutil.Error):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=grace_s)
    for child in alive:
        with suppress(psutil.Error):
            child.kill()
    return [child.pid for child in children]
