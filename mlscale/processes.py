"""Child processes mlscale starts and stops: free ports, and process groups.

A server, a Locust generator or ``mlflow models serve`` is started in a session of
its own (its own process group), so a terminal's Ctrl-C reaches only mlscale, which
then stops its children in order; and it is stopped as a group, because the process
started is often a launcher whose children (uvicorn's workers, mlflow's server, a
model download) would outlive a signal to it alone.

The bottom layer: standard library only, importable from anywhere.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterable, Sequence
from typing import Any

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port the kernel says is free on ``host`` now.

    Another process may take it before the caller binds it; on a loopback interface
    of a test or a single machine that race is accepted, and commands that can bind
    port 0 themselves (``mlscale serve -p 0``) should do that instead.
    """
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def start_group(argv: Sequence[str], **popen: Any) -> subprocess.Popen:
    """``subprocess.Popen(argv, **popen)`` in a new session, leading its own process
    group: ``stop_group`` reaches the process and every child it starts."""
    return subprocess.Popen(argv, start_new_session=True, **popen)


def signal_group(process: subprocess.Popen, signum: int) -> bool:
    """Send ``signum`` to the process group ``process`` leads; False when the group
    is already gone (nothing left to signal)."""
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        return False
    return True


def stop_group(process: subprocess.Popen, grace_s: float = 30.0) -> int:
    """SIGTERM to the whole group, SIGKILL to it after ``grace_s``; the exit status.

    The group is signalled even when its leader has exited already: its children
    may not have.
    """
    signal_group(process, signal.SIGTERM)
    try:
        return process.wait(grace_s)
    except subprocess.TimeoutExpired:
        pass
    signal_group(process, signal.SIGKILL)
    return process.wait()


def stop_groups(processes: Iterable[subprocess.Popen], grace_s: float = 30.0) -> None:
    """Stop several groups at once: SIGTERM to every one first (they wind down in
    parallel), then each gets ``grace_s`` to exit before SIGKILL to its group."""
    processes = list(processes)
    for process in processes:
        if process.poll() is None:
            signal_group(process, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            signal_group(process, signal.SIGKILL)
            process.wait()
