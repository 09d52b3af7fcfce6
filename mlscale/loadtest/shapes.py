"""Load shapes: how many users, or how many requests per second, over time.

A shape is a list of stages; each stage holds a value, or ramps linearly from
one value to another, between two instants. The same shapes drive Locust
(through the locustfile's ``LoadTestShape``) and ``mlscale simulate``; profile
files are CSV with a ``time_s`` column and a ``users`` or ``rps`` column, each
row holding from its time until the next row's.

Pure functions of time, so tests are tables of numbers.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from mlscale.errors import ConfigurationError
from mlscale.loadtest.records import ShapeRecord, StageRecord

USERS = "users"
RPS = "rps"


@dataclass(frozen=True)
class Stage:
    start_s: float
    end_s: float
    start_value: float
    end_value: float

    def value_at(self, t: float) -> float:
        if self.end_s <= self.start_s:
            return self.end_value
        fraction = (t - self.start_s) / (self.end_s - self.start_s)
        return self.start_value + (self.end_value - self.start_value) * fraction


@dataclass(frozen=True)
class Shape:
    """A load over time; ``kind`` is ``users`` (closed loop) or ``rps`` (open loop)."""

    kind: str
    stages: tuple[Stage, ...]

    @property
    def duration_s(self) -> float:
        return self.stages[-1].end_s if self.stages else 0.0

    @property
    def peak(self) -> float:
        return max((max(s.start_value, s.end_value) for s in self.stages), default=0.0)

    def stage_index(self, t: float) -> int | None:
        """The stage running at ``t`` seconds, or None once the shape is over."""
        for index, stage in enumerate(self.stages):
            if stage.start_s <= t < stage.end_s:
                return index
        return None

    def value_at(self, t: float) -> float | None:
        index = self.stage_index(t)
        return None if index is None else self.stages[index].value_at(t)

    def to_dict(self) -> ShapeRecord:
        return {"kind": self.kind, "stages": [_stage_record(s) for s in self.stages]}

    @classmethod
    def from_dict(cls, data: ShapeRecord) -> Shape:
        return cls(data["kind"], tuple(Stage(**s) for s in data["stages"]))


First = TypeVar("First")
Second = TypeVar("Second")


def _stage_record(stage: Stage) -> StageRecord:
    return {
        "start_s": stage.start_s,
        "end_s": stage.end_s,
        "start_value": stage.start_value,
        "end_value": stage.end_value,
    }


def _check_kind(kind: str) -> None:
    if kind not in (USERS, RPS):
        raise ConfigurationError(f"A load is counted in {USERS} or {RPS}, not {kind!r}.")


def _positive(name: str, value: float) -> float:
    if not (value > 0 and math.isfinite(value)):
        raise ConfigurationError(f"{name} must be a positive number of seconds, not {value}.")
    return value


def constant(kind: str, value: float, duration_s: float) -> Shape:
    _check_kind(kind)
    return Shape(kind, (Stage(0.0, _positive("The duration", duration_s), value, value),))


def ramp(kind: str, start: float, end: float, duration_s: float) -> Shape:
    _check_kind(kind)
    return Shape(kind, (Stage(0.0, _positive("The duration", duration_s), start, end),))


def colon_pairs(
    spec: str,
    cast: tuple[Callable[[str], First], Callable[[str], Second]],
    explain: Callable[[str], str],
) -> list[tuple[First, Second, str]]:
    """``"A:B,C:D"`` as typed pairs, each with its text; ``explain(part)`` words the error
    for a bad one."""
    pairs: list[tuple[First, Second, str]] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        try:
            first, second = part.split(":")
            pairs.append((cast[0](first), cast[1](second), part))
        except ValueError:
            raise ConfigurationError(explain(part)) from None
    return pairs


def steps(kind: str, spec: str) -> Shape:
    """``"60:10,60:20,60:40"``: 60 s at 10, then 60 s at 20, then 60 s at 40."""
    _check_kind(kind)
    stages, start = [], 0.0

    def explain(part: str) -> str:
        return (
            f"Cannot read the step {part!r}: write steps as SECONDS:VALUE, "
            "comma-separated, for example 60:10,60:20,60:40."
        )

    for seconds, value, part in colon_pairs(spec, (float, float), explain):
        if value < 0:
            raise ConfigurationError(f"The step {part!r} has a negative load.")
        end = start + _positive(f"The step {part!r}'s duration", seconds)
        stages.append(Stage(start, end, value, value))
        start = end
    if not stages:
        raise ConfigurationError("--steps needs at least one SECONDS:VALUE step.")
    return Shape(kind, tuple(stages))


def spike(kind: str, base: float, peak: float, duration_s: float, at_s: float, width_s: float) -> Shape:
    """``base`` throughout, ``peak`` from ``at_s`` for ``width_s`` seconds."""
    _check_kind(kind)
    _positive("The duration", duration_s)
    _positive("The spike's width", width_s)
    if not 0 <= at_s < duration_s:
        raise ConfigurationError(f"The spike must start within the run (0 to {duration_s:g} s).")
    end = min(at_s + width_s, duration_s)
    stages = [Stage(0.0, at_s, base, base)] if at_s > 0 else []
    stages.append(Stage(at_s, end, peak, peak))
    if end < duration_s:
        stages.append(Stage(end, duration_s, base, base))
    return Shape(kind, tuple(stages))


def read_profile(path: str, duration_s: float | None = None) -> Shape:
    """A profile CSV (``time_s`` and ``users`` or ``rps``).

    Each row holds from its time until the next row's; the last row holds for
    ``duration_s`` in all when given, else as long as the row before it did.
    """
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise ConfigurationError(f"Cannot read the profile {path}: {exc.strerror}.") from exc
    if not rows or "time_s" not in rows[0]:
        raise ConfigurationError(f"The profile {path} needs a header with time_s and users or rps.")
    kinds = [k for k in (USERS, RPS) if k in rows[0]]
    if len(kinds) != 1:
        raise ConfigurationError(f"The profile {path} needs exactly one of the columns users, rps.")
    kind = kinds[0]
    try:
        points = [(float(r["time_s"]), float(r[kind])) for r in rows]
    except (TypeError, ValueError):
        raise ConfigurationError(f"The profile {path} has a row that is not numbers.") from None
    times = [t for t, _ in points]
    if times[0] != 0 or any(b <= a for a, b in itertools.pairwise(times)):
        raise ConfigurationError(f"The profile {path} must start at time_s 0 and increase.")
    if any(v < 0 for _, v in points):
        raise ConfigurationError(f"The profile {path} has a negative load.")
    if duration_s is not None:
        end = duration_s
    elif len(points) > 1:
        end = times[-1] + (times[-1] - times[-2])
    else:
        raise ConfigurationError(f"The profile {path} has one row: give --duration too.")
    if end <= times[-1]:
        raise ConfigurationError(f"--duration must be past the profile's last row ({times[-1]:g} s).")
    bounds = [*times[1:], end]
    return Shape(kind, tuple(Stage(t, e, v, v) for (t, v), e in zip(points, bounds, strict=False)))
