"""``mlscale serve`` as a real process on a real socket, with what the tests inspect."""

from __future__ import annotations

import signal

import httpx
import psutil

from mlscale.serving.process import ServeProcess


class ServerProcess(ServeProcess):
    def __init__(self, *args: str, env: dict | None = None, cwd: str | None = None) -> None:
        super().__init__(args, env=env, cwd=cwd)

    def wait_ready(self, timeout: float = 90) -> ServerProcess:
        if not self.ready(timeout):
            raise AssertionError(f"server never became ready:\n{self.output}")
        return self

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    def wait_exit(self, timeout: float = 60) -> int:
        return self.process.wait(timeout)

    def children(self) -> list[int]:
        """The worker processes (multiprocessing's resource tracker is not one)."""

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
        self.stop(grace_s=10)
