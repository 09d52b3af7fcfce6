"""``mlscale serve`` as a real process on a real socket, for the tests.

The server binds port 0; the port is read back from uvicorn's start-up line,
and readiness is polled on /ping, never waited for with a fixed sleep.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import httpx

_RUNNING = re.compile(r"Uvicorn running on http://[^:]+:(\d+)")
MLSCALE = os.path.join(os.path.dirname(sys.executable), "mlscale")


class ServerProcess:
    def __init__(self, *args: str, env: dict | None = None, cwd: str | None = None) -> None:
        self.args = [MLSCALE, "serve", "-p", "0", *args]
        self.lines: list[str] = []
        self.port: int | None = None
        self._port_found = threading.Event()
        self.process = subprocess.Popen(
            self.args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip())
            match = _RUNNING.search(line)
            if match and self.port is None:
                self.port = int(match.group(1))
                self._port_found.set()
        self._port_found.set()  # the process ended: stop waiting

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 90) -> ServerProcess:
        deadline = time.monotonic() + timeout
        if not self._port_found.wait(timeout) or self.port is None:
            raise AssertionError(f"server did not start:\n{self.output}")
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/ping", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"server never became ready:\n{self.output}")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    def wait_exit(self, timeout: float = 60) -> int:
        return self.process.wait(timeout)

    def children(self) -> list[int]:
        """The worker processes (multiprocessing's resource tracker is not one)."""
        import psutil

        workers = []
        for child in psutil.Process(self.process.pid).children():
            try:
                if "resource_tracker" not in " ".join(child.cmdline()):
                    workers.append(child.pid)
            except psutil.Error:
                pass
        return workers

    def metric(self, name: str, **labels: str) -> float:
        """A metric's value summed over matching series, from /metrics."""
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name):
                continue
            series, _, value = line.rpartition(" ")
            head, _, rest = series.partition("{")
            if head != name:
                continue
            if all(f'{k}="{v}"' in rest for k, v in labels.items()):
                total += float(value)
        return total

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(10)
