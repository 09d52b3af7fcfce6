"""A model server sized like a Kubernetes pod, on this machine.

Whole cores are given by CPU affinity (``taskset``); a fraction of a core, such
as 500m, by a CFS quota in a cgroup of its own, as the kubelet enforces a CPU
limit. Where cgroups cannot be written, fractional sizes are refused with a
message, and whole cores still work.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass

from mlscale.capacity.models import CFS_PERIOD_MS
from mlscale.errors import ConfigurationError, MlscaleError
from mlscale.serving.process import ServeProcess

_CGROUP_CPU = "/sys/fs/cgroup/cpu"
_PERIOD_US = int(CFS_PERIOD_MS * 1000)  # the period the capacity model assumes


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
    """``--cpus 0.5,1 --workers-per-pod 1`` (``500m`` also reads as 0.5).

    Errors name the flag: they reach the terminal as usage errors."""
    try:
        cpu_values = [
            float(c[:-1]) / 1000 if c.endswith("m") else float(c)
            for c in (x.strip() for x in cpus.split(","))
            if c
        ]
    except ValueError:
        raise ConfigurationError(
            f"--cpus {cpus!r} is not a list of CPUs: write --cpus 0.5,1 or 250m,500m."
        ) from None
    try:
        worker_values = [int(w) for w in workers.split(",") if w.strip()]
    except ValueError:
        raise ConfigurationError(
            f"--workers-per-pod {workers!r} is not a list of whole numbers: write --workers-per-pod 1,2."
        ) from None
    # float() reads "nan", "inf" and "1e400" (inf): none of them is a pod size.
    if not cpu_values or not all(math.isfinite(c) and c > 0 for c in cpu_values):
        raise ConfigurationError(
            f"--cpus {cpus!r}: every CPU per pod must be a positive number, such as 0.5 or 1."
        )
    if not worker_values or any(w < 1 for w in worker_values):
        raise ConfigurationError(
            f"--workers-per-pod {workers!r}: give at least one worker count of 1 or more, such as 1,2."
        )
    return [PodSpec(c, w) for c in cpu_values for w in worker_values]


def quota_supported() -> bool:
    return os.access(_CGROUP_CPU, os.W_OK)


def cores_for(spec: PodSpec, available: int | None = None) -> tuple[int, ...]:
    """The cores a pod of this size runs on; the rest are the load generator's.

    ``available`` is this machine's core count unless given (tests, checks)."""
    available = available or os.cpu_count() or 1
    needed = max(1, int(spec.cpu + 0.999))
    if needed >= available:
        raise ConfigurationError(
            f"--cpus {spec.cpu:g}: a pod of {spec.cpu:g} CPU would leave no core for the load "
            f"generator on this {available}-core machine; measure smaller pods (at most "
            f"{available - 1}) and let the model extrapolate."
        )
    return tuple(range(needed))


def check_measurable(spec: PodSpec, *, available: int, quota: bool) -> None:
    """Whether this machine (``available`` cores; CPU quotas writable or not) can run a
    pod of this size beside its load generator; ConfigurationError naming --cpus if not."""
    cores_for(spec, available)
    if spec.cpu != int(spec.cpu) and not quota:
        raise ConfigurationError(
            f"--cpus {spec.cpu:g}: a pod of {spec.cpu * 1000:.0f}m needs a CPU quota, and cgroups "
            "are not writable here; use whole cores (--cpus 1)."
        )


class Pod:
    """``mlscale serve`` pinned and limited like a pod; a context manager."""

    def __init__(self, model_uri: str, spec: PodSpec, *, env: dict[str, str] | None = None) -> None:
        self.spec = spec
        check_measurable(spec, available=os.cpu_count() or 1, quota=quota_supported())
        self.cores = cores_for(spec)
        fractional = spec.cpu != int(spec.cpu)
        self.server = ServeProcess(
            ["-m", model_uri, "-w", str(spec.workers), "--max-queue", "100000"],
            prefix=["taskset", "-c", ",".join(map(str, self.cores))],
            env=env,
        )
        self._cgroup: str | None = None
        try:
            self._cgroup = self._limit(spec.cpu) if fractional else None
        except BaseException:
            # The server is already running: a failed cgroup write must not leave it behind.
            self.stop()
            raise

    def _limit(self, cpu: float) -> str:
        path = os.path.join(_CGROUP_CPU, f"mlscale-{os.getpid()}-{self.server.pid}")
        os.makedirs(path, exist_ok=True)
        self._cgroup = path  # from here on, stop() removes it, whatever fails next
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
            with contextlib.suppress(OSError):
                os.rmdir(self._cgroup)

    def __enter__(self) -> Pod:
        try:
            ready = self.server.ready(180)
        except BaseException:
            # Ctrl-C while the model loads: __exit__ never runs for a failed __enter__,
            # so the server and its cgroup are stopped here.
            self.stop()
            raise
        if not ready:
            self.stop()
            tail = "\n".join(self.server.lines[-10:])
            raise PodError(f"The model server for a pod of {self.spec.label} did not start:\n{tail}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
