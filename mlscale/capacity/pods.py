"""A model server sized like a Kubernetes pod, on this machine.

Whole cores are given by CPU affinity (``taskset``); a fraction of a core, such
as 500m, by a CFS quota in a cgroup of its own, as the kubelet enforces a CPU
limit. Where cgroups cannot be written, fractional sizes are refused with a
message, and whole cores still work.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from mlscale.errors import ConfigurationError, MlscaleError
from mlscale.serving.process import ServeProcess

_CGROUP_CPU = "/sys/fs/cgroup/cpu"
_PERIOD_US = 100_000


class PodError(MlscaleError):
    """A pod-sized server could not start."""


@dataclass(frozen=True)
class PodSpec:
    cpu: float  # cores, e.g. 0.5 or 1
    workers: int = 1

    @property
    def label(self) -> str:
        cpu = f"{self.cpu * 1000:.0f}m" if self.cpu < 1 else f"{self.cpu:g} CPU"
        return f"{cpu}, {self.workers} worker{'s' if self.workers > 1 else ''}"


def parse_pod_specs(cpus: str, workers: str = "1") -> list[PodSpec]:
    """``--cpus 0.5,1 --workers-per-pod 1`` (``500m`` also reads as 0.5)."""
    try:
        cpu_values = [float(c[:-1]) / 1000 if c.endswith("m") else float(c)
                      for c in (x.strip() for x in cpus.split(",")) if c]  # fmt: skip
        worker_values = [int(w) for w in workers.split(",") if w.strip()]
    except ValueError:
        raise ConfigurationError(
            f"Cannot read the pod sizes {cpus!r} / {workers!r}: write --cpus 0.5,1,2 and "
            "--workers-per-pod 1,2."
        ) from None
    if not cpu_values or any(c <= 0 for c in cpu_values) or any(w < 1 for w in worker_values):
        raise ConfigurationError("Pod sizes need positive CPUs and at least one worker.")
    return [PodSpec(c, w) for c in cpu_values for w in worker_values]


def quota_supported() -> bool:
    return os.access(_CGROUP_CPU, os.W_OK)


def cores_for(spec: PodSpec) -> tuple[int, ...]:
    """The cores a pod of this size runs on; the rest are the load generator's."""
    available = os.cpu_count() or 1
    needed = max(1, int(spec.cpu + 0.999))
    if needed >= available:
        raise ConfigurationError(
            f"A pod of {spec.cpu:g} CPU would leave no core for the load generator on this "
            f"{available}-core machine; measure smaller pods and let the model extrapolate."
        )
    return tuple(range(needed))


class Pod:
    """``mlscale serve`` pinned and limited like a pod; a context manager."""

    def __init__(self, model_uri: str, spec: PodSpec, *, env: dict | None = None) -> None:
        self.spec = spec
        self.cores = cores_for(spec)
        fractional = spec.cpu != int(spec.cpu)
        if fractional and not quota_supported():
            raise ConfigurationError(
                f"A pod of {spec.cpu * 1000:.0f}m needs a CPU quota, and cgroups are not "
                "writable here; use whole cores (--cpus 1,2)."
            )
        self.server = ServeProcess(
            ["-m", model_uri, "-w", str(spec.workers), "--max-queue", "100000"],
            prefix=["taskset", "-c", ",".join(map(str, self.cores))], env=env,
        )  # fmt: skip
        self._cgroup = self._limit(spec.cpu) if fractional else None

    def _limit(self, cpu: float) -> str:
        path = os.path.join(_CGROUP_CPU, f"mlscale-{os.getpid()}-{self.server.pid}")
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "cpu.cfs_period_us"), "w") as handle:
            handle.write(str(_PERIOD_US))
        with open(os.path.join(path, "cpu.cfs_quota_us"), "w") as handle:
            handle.write(str(int(cpu * _PERIOD_US)))
        # Processes started later (uvicorn's workers) inherit the group.
        with open(os.path.join(path, "cgroup.procs"), "w") as handle:
            handle.write(str(self.server.pid))
        return path

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> None:
        self.server.stop()
        if self._cgroup:
            try:
                os.rmdir(self._cgroup)
            except OSError:
                pass

    def __enter__(self) -> Pod:
        if not self.server.ready(180):
            self.stop()
            tail = "\n".join(self.server.lines[-10:])
            raise PodError(f"The model server for a pod of {self.spec.label} did not start:\n{tail}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
