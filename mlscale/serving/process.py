"""``mlscale serve`` as a child process, for commands (and tests) that need a server.

The server binds port 0 and the port is read back from its start-up line;
readiness is polled on /ping, never assumed after a fixed sleep.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence

from mlscale.processes import start_group, stop_group

_RUNNING = re.compile(r"Uvicorn running on http://[^:]+:(\d+)")


class ServeProcess:
    def __init__(
        self,
        args: Sequence[str],
        *,
        prefix: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> None:
        """``prefix`` goes before the interpreter (``taskset -c 0``, say)."""
        self.args = [*prefix, sys.executable, "-m", "mlscale", "serve", "-p", "0", *args]
        self.lines: list[str] = []
        self.port: int | None = None
        self._port_found = threading.Event()
        self.process = start_group(
            self.args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=cwd,
            env={**os.environ, **(env or {})},
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None  # opened with stdout=PIPE
        with self.process.stdout:  # closed at the end, by the one thread that reads it
            for line in self.process.stdout:
                self.lines.append(line.rstrip())
                match = _RUNNING.search(line)
                if match and self.port is None:
                    self.port = int(match.group(1))
                    self._port_found.set()
        self._port_found.set()  # the process ended: stop waiting

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self, timeout_s: float = 120) -> bool:
        """Wait until /ping answers 200; False if the server exits or time runs out."""
        deadline = time.monotonic() + timeout_s
        if not self._port_found.wait(timeout_s) or self.port is None:
            return False
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=2) as response:
                    if response.status == 200:
                        return True
            except OSError:
                pass
            if self.process.poll() is not None:
                return False
            time.sleep(0.05)
        return False

    def stop(self, grace_s: float = 30) -> int:
        """SIGTERM to the whole group, SIGKILL to it after ``grace_s``; the exit status.

        The group, not only the server: it started in a session of its own, so its
        children (the model download's, uvicorn's workers) get no terminal signal
        and would outlive it if only the server were told.
        """
        return stop_group(self.process, grace_s)
