"""What the tick loop reads: a pod's states over a grid of loads, solved on first use.

A tick costs a lookup and an interpolation, not a solve of the queue (``queue``).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

from mlscale.simulate.queue import RHO_MAX, PodModel, _closed_integer, open_loop


class ClosedTable:
    """Closed-loop pod states over a grid of users per pod, interpolated.

    Whole counts up to 64, then 4 % apart: the latency curve is smooth there and
    a linear interpolation between neighbours is well within the model's error.
    A row is solved the first time a lookup needs it: a run visits a band of the
    grid, and each row costs a bisection."""

    def __init__(self, model: PodModel, think_s: float, quantiles: Sequence[float], max_users: float) -> None:
        grid = list(range(65))
        n = 64.0
        while grid[-1] < max_users:
            n *= 1.04
            if round(n) > grid[-1]:
                grid.append(round(n))
        self.grid = grid
        self._model, self._think_s, self._quantiles = model, think_s, tuple(quantiles)
        self._rows: list[tuple[float, ...] | None] = [None] * len(grid)

    def row(self, i: int) -> tuple[float, ...]:
        """(throughput, busy, mean_ms, in_flight, *quantiles_ms) at ``grid[i]`` users."""
        row = self._rows[i]
        if row is None:
            s = _closed_integer(self._model, self.grid[i], self._think_s, self._quantiles)
            row = self._rows[i] = (s.throughput, s.busy, s.mean_ms, s.in_flight, *s.quantiles_ms)
        return row

    def at(self, users: float) -> tuple[float, ...]:
        """(throughput, busy, mean_ms, in_flight, *quantiles_ms) for ``users`` per pod."""
        grid = self.grid
        if users >= grid[-1]:
            return self.row(len(grid) - 1)
        i = bisect.bisect_right(grid, users) - 1
        low, high = grid[i], grid[i + 1]
        share = (users - low) / (high - low)
        a, b = self.row(i), self.row(i + 1)
        return tuple(x + (y - x) * share for x, y in zip(a, b, strict=False))

    def serving(self, users: float, extra: int) -> tuple[float, float, float, float, float, float]:
        """What a tick reads, as ``at`` computes it: (throughput, busy, in_flight,
        p50_ms, p95_ms, and the quantile at ``extra``)."""
        grid = self.grid
        if users >= grid[-1]:
            a = self.row(len(grid) - 1)
            return a[0], a[1], a[3], a[4], a[5], a[4 + extra]
        i = bisect.bisect_right(grid, users) - 1
        low, high = grid[i], grid[i + 1]
        share = (users - low) / (high - low)
        a, b = self.row(i), self.row(i + 1)
        k = 4 + extra
        return (
            a[0] + (b[0] - a[0]) * share,
            a[1] + (b[1] - a[1]) * share,
            a[3] + (b[3] - a[3]) * share,
            a[4] + (b[4] - a[4]) * share,
            a[5] + (b[5] - a[5]) * share,
            a[k] + (b[k] - a[k]) * share,
        )


class OpenTable:
    """Open-loop pod states against the offered share of capacity ρ < RHO_MAX, on a
    grid uniform in −ln(1−ρ), which is dense where the latency climbs. Rows are
    solved on first use, as in ``ClosedTable``."""

    def __init__(self, model: PodModel, quantiles: Sequence[float], points: int = 240) -> None:
        self.capacity = model.capacity_rps
        self.top = -math.log(1 - RHO_MAX)
        self.step = self.top / (points - 1)
        self._model, self._quantiles = model, tuple(quantiles)
        self._rows: list[tuple[float, ...] | None] = [None] * points

    def row(self, i: int) -> tuple[float, ...]:
        """(mean_ms, *quantiles_ms) at the grid's ``i``-th point."""
        row = self._rows[i]
        if row is None:
            rho = 1 - math.exp(-i * self.step)
            s = open_loop(self._model, min(rho, RHO_MAX) * self.capacity, self._quantiles)
            row = self._rows[i] = (s.mean_ms, *s.quantiles_ms)
        return row

    def _place(self, rho: float) -> tuple[int, float]:
        x = -math.log1p(-rho) / self.step
        i = int(x)
        return i, x - i

    def at(self, rho: float) -> tuple[float, ...]:
        """(mean_ms, *quantiles_ms) at ``rho`` (clamped to RHO_MAX)."""
        last = len(self._rows) - 1
        if rho >= RHO_MAX:
            return self.row(last)
        i, share = self._place(rho)
        a, b = self.row(i), self.row(min(i + 1, last))
        return tuple(p + (q - p) * share for p, q in zip(a, b, strict=False))

    def serving(self, rho: float, extra: int) -> tuple[float, float, float, float]:
        """What a tick reads, as ``at`` computes it: (mean_ms, p50_ms, p95_ms, and the
        quantile at ``extra``)."""
        last = len(self._rows) - 1
        if rho >= RHO_MAX:
            a = self.row(last)
            return a[0], a[1], a[2], a[1 + extra]
        i, share = self._place(rho)
        a, b = self.row(i), self.row(min(i + 1, last))
        k = 1 + extra
        return (
            a[0] + (b[0] - a[0]) * share,
            a[1] + (b[1] - a[1]) * share,
            a[2] + (b[2] - a[2]) * share,
            a[k] + (b[k] - a[k]) * share,
        )
