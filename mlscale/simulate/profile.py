"""The load over simulated time: a ``Shape`` (as ``mlscale loadtest --shape`` reads
it) sampled once per tick, and a synthetic daily profile for long runs."""

from __future__ import annotations

import math

import numpy as np

from mlscale.errors import ConfigurationError
from mlscale.loadtest.shapes import RPS, Shape, Stage, read_profile

__all__ = ["daily_shape", "load_fall_s", "read_profile", "sample"]


def sample(shape: Shape, tick_s: float) -> np.ndarray:
    """The load at the start of every tick, as an array (stages hold or ramp)."""
    if not shape.stages or shape.duration_s <= 0:
        raise ConfigurationError("The load profile is empty.")
    ticks = max(1, math.ceil(shape.duration_s / tick_s - 1e-9))
    t = np.arange(ticks) * tick_s
    starts = np.array([s.start_s for s in shape.stages])
    index = np.clip(np.searchsorted(starts, t, side="right") - 1, 0, len(shape.stages) - 1)
    begin = starts[index]
    end = np.array([s.end_s for s in shape.stages])[index]
    v0 = np.array([s.start_value for s in shape.stages])[index]
    v1 = np.array([s.end_value for s in shape.stages])[index]
    length = np.maximum(end - begin, 1e-12)
    share = np.clip((t - begin) / length, 0.0, 1.0)
    result: np.ndarray = v0 + (v1 - v0) * share
    return result


def daily_shape(
    peak: float,
    *,
    kind: str = RPS,
    trough_share: float = 0.1,
    hours: float = 24.0,
    step_s: float = 300.0,
    peak_hour: float = 16.0,
) -> Shape:
    """A day of traffic: a cosine between ``trough_share``·peak (12 h before the peak)
    and ``peak`` at ``peak_hour``, ramping linearly every ``step_s`` seconds."""
    if peak <= 0 or not 0 <= trough_share <= 1:
        raise ConfigurationError("A daily profile needs a positive peak and a trough share in [0, 1].")
    stages = []
    total = hours * 3600
    t = 0.0

    def at(seconds: float) -> float:
        phase = 2 * math.pi * (seconds / 3600 - peak_hour) / 24
        return peak * (trough_share + (1 - trough_share) * (1 + math.cos(phase)) / 2)

    while t < total:
        end = min(t + step_s, total)
        stages.append(Stage(t, end, at(t), at(end)))
        t = end
    return Shape(kind, tuple(stages))


def load_fall_s(load: np.ndarray, tick_s: float, share: float = 0.5) -> float | None:
    """When the load last fell from at least ``share`` of its peak to below it: the
    instant the scale-down is timed from. None if it never falls."""
    peak = float(load.max()) if len(load) else 0.0
    if peak <= 0:
        return None
    high = load >= share * peak
    falls = np.flatnonzero(high[:-1] & ~high[1:])
    return float((falls[-1] + 1) * tick_s) if len(falls) else None
