"""SLA expressions: ``p95<1000ms``, ``p99<=0.5s``, ``errors<1%``, comma-separated.

Pure: parse once at the edge, evaluate against a summary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mlscale.errors import ConfigurationError

_TERM = re.compile(
    r"^\s*(?:(?P<pct>p(?:50|90|95|99|999|max|[0-9]{1,2}(?:\.[0-9]+)?))|(?P<errors>errors?))\s*"
    r"(?P<op><=|<)\s*(?P<value>[0-9]*\.?[0-9]+)\s*(?P<unit>ms|s|%)?\s*$",
    re.IGNORECASE,
)
_NAMES = {"p50": "p50", "p90": "p90", "p95": "p95", "p99": "p99", "p999": "p999", "pmax": "max"}


@dataclass(frozen=True)
class Bound:
    metric: str  # p50 … p999, max, or "error_rate"
    limit: float  # milliseconds, or a fraction for error_rate
    inclusive: bool

    def holds(self, value: float | None) -> bool:
        if value is None:
            return False
        return value <= self.limit if self.inclusive else value < self.limit

    def describe(self) -> str:
        op = "<=" if self.inclusive else "<"
        if self.metric == "error_rate":
            return f"errors {op} {self.limit * 100:g}%"
        if self.limit >= 1000:  # "p95 < 1 s", as people write an SLA
            return f"{self.metric} {op} {self.limit / 1000:g} s"
        return f"{self.metric} {op} {self.limit:g} ms"


@dataclass(frozen=True)
class Sla:
    expr: str
    bounds: tuple[Bound, ...]

    @property
    def percentile(self) -> str | None:
        """The latency percentile the SLA bounds (the first one), e.g. ``p95``."""
        return next((b.metric for b in self.bounds if b.metric != "error_rate"), None)

    def describe(self) -> str:
        return ", ".join(bound.describe() for bound in self.bounds)

    def evaluate(self, latency_ms: dict, error_rate: float) -> dict:
        checks = []
        for bound in self.bounds:
            value = error_rate if bound.metric == "error_rate" else latency_ms.get(bound.metric)
            checks.append({"bound": bound.describe(), "value": value, "met": bound.holds(value)})
        return {"expr": self.expr, "met": all(c["met"] for c in checks), "checks": checks}


def parse_sla(expr: str) -> Sla:
    bounds = []
    for term in (t for t in expr.split(",") if t.strip()):
        match = _TERM.match(term)
        if match is None:
            raise ConfigurationError(
                f"Cannot read the SLA term {term.strip()!r}. Write it like p95<1000ms, "
                "p99<=0.5s or errors<1%, comma-separated."
            )
        value = float(match["value"])
        unit = (match["unit"] or "").lower()
        inclusive = match["op"] == "<="
        if match["errors"]:
            if unit not in ("%", ""):
                raise ConfigurationError(f"An error bound is a percentage: {term.strip()!r}.")
            bounds.append(Bound("error_rate", value / 100, inclusive))
            continue
        name = match["pct"].lower()
        metric = _NAMES.get(name)
        if metric is None:
            raise ConfigurationError(
                f"{name} is not a reported percentile; use p50, p90, p95, p99, p999 or pmax."
            )
        if unit == "%":
            raise ConfigurationError(f"A latency bound needs ms or s: {term.strip()!r}.")
        bounds.append(Bound(metric, value * 1000 if unit == "s" else value, inclusive))
    if not bounds:
        raise ConfigurationError("The SLA is empty; write it like p95<1000ms.")
    return Sla(expr.strip(), tuple(bounds))
