"""summary.json of a load test: the totals, the exact percentiles, validity, the SLA.

Built by ``mlscale.loadtest.results.build_summary`` as a :class:`LoadTestSummary`;
the planner, the demo and the reports read it through the same class. Unknown keys
are ignored (``extra="ignore"``): a summary is also written by the Locust master
inside a container image that may be a newer mlscale, and the readers need only
the keys here; a summary missing one of them is a :class:`SummaryFileError`.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from mlscale.errors import ConfigurationError

LOADTEST_SCHEMA_VERSION = 1


class SummaryFileError(ConfigurationError):
    """A summary.json that is not a load test's (or a simulation's) summary."""


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", ser_json_inf_nan="constants")


class SlaCheck(_Record):
    bound: str  # e.g. "p95 < 1000 ms"
    value: float | None
    met: bool


class SlaVerdict(_Record):
    expr: str
    met: bool
    checks: tuple[SlaCheck, ...] = ()


class KindSummary(_Record):
    """One request kind's (a mix's entry) totals."""

    requests: int
    failures: int
    latency_ms: dict[str, float | None]


class ErrorCount(_Record):
    kind: str
    error: str
    count: int


class OpenLoopCounts(_Record):
    """Open loop only: requests sent late or not at all, and the server's own latency."""

    late: int
    dropped: int
    service_latency_ms: dict[str, float | None]


class LoadTestSummary(_Record):
    """summary.json of ``mlscale loadtest``."""

    schema_version: int = LOADTEST_SCHEMA_VERSION
    requests: int
    failures: int
    error_rate: float
    rps: float
    duration_s: float
    # p50 ... p99.9, "max" and "mean"; None where nothing was answered.
    latency_ms: dict[str, float | None]
    by_kind: dict[str, KindSummary] = {}
    errors: tuple[ErrorCount, ...] = ()
    valid: bool
    problems: tuple[str, ...] = ()
    sla: SlaVerdict | None = None
    config: dict[str, Any] = {}  # the run's settings, as the locustfile got them
    open_loop: OpenLoopCounts | None = None
    notes: tuple[str, ...] | None = None

    def to_json_dict(self) -> dict[str, Any]:
        """summary.json's content: the keys set (``open_loop`` and ``notes`` only when
        they apply), ``schema_version`` first."""
        data = self.model_dump(mode="json", exclude_unset=True)
        data.pop("schema_version", None)
        return {"schema_version": self.schema_version, **data}

    def to_json(self) -> str:
        return json.dumps(self.to_json_dict(), indent=2)


def parse_loadtest_summary(data: Any, *, source: str = "the summary") -> LoadTestSummary:
    """A load test's summary from decoded JSON (or the runner's dict); SummaryFileError
    naming the field when it is not one."""
    if isinstance(data, LoadTestSummary):
        return data
    try:
        return LoadTestSummary.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the summary"
        raise SummaryFileError(
            f"{source} is not a load test's summary.json: {where}: {first['msg']}. "
            "Run `mlscale loadtest` again."
        ) from None
