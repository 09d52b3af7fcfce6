"""Finding the processes a command left behind.

The command line is not enough: the demo's children are ``mlscale serve -p 0
-m models:/…``, ``locust -f locustfile …`` and ``mlflow models serve -m
models:/…``, none of which names the demo's folder. What every one of them
carries is the folder in its environment (MLFLOW_TRACKING_URI points into it),
so the environment is searched as well as the command line.
"""

from __future__ import annotations

import os

import psutil


def processes_mentioning(marker: str) -> list[str]:
    """Live processes other than this one whose command line or environment
    contains ``marker``, as "pid: command line"."""
    found = []
    for process in psutil.process_iter(["cmdline", "environ", "status"]):
        info = process.info
        # A zombie has exited (only its exit status is left to collect); the
        # environment of another user's process is unreadable (None).
        if process.pid == os.getpid() or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cmdline = " ".join(info["cmdline"] or [])
        environ = "\0".join(f"{k}={v}" for k, v in (info["environ"] or {}).items())
        if marker in cmdline or marker in environ:
            found.append(f"{process.pid}: {cmdline}")
    return found
