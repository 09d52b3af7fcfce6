"""The JSON records the load-test stages hand each other, typed.

mlscale writes the locustfile's configuration, Locust's processes read it; the
generators send their windows of results to the master, which writes them out;
the master prints a progress line a second, which mlscale reads. Each crosses a
process boundary as JSON, so each is a ``TypedDict``: a plain dict at run time
(nothing added on the generator's hot path), with its keys checked by mypy.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict


class StageRecord(TypedDict):
    """One stage of a load shape (``shapes.Stage``)."""

    start_s: float
    end_s: float
    start_value: float
    end_value: float


class ShapeRecord(TypedDict):
    """A load shape (``shapes.Shape``): users or requests/s over time."""

    kind: str
    stages: list[StageRecord]


class BodyKindRecord(TypedDict):
    """One kind of request of the pool: its rows per request, its share, its bodies."""

    name: str
    rows: int
    weight: float
    bodies: list[str]


class PoolRecord(TypedDict):
    """The request bodies of a load test (``bodies.BodyPool``)."""

    content_type: str
    kinds: list[BodyKindRecord]


class LocustConfig(TypedDict):
    """The locustfile's configuration: the file ``MLSCALE_LOADTEST_CONFIG`` names."""

    mode: str  # "closed" (users) or "open" (arrivals)
    think_time_s: float
    think: str  # "constant" or "random"
    path: str
    shape: NotRequired[ShapeRecord]  # without one, as long as Locust is told to run
    out: NotRequired[str]  # where the master writes its results (none: nowhere)
    spawn_rate: NotRequired[float]
    arrival: NotRequired[str]  # open loop: "poisson" or "constant"
    dispatchers: NotRequired[int]
    workers: NotRequired[int]
    max_in_flight: NotRequired[int]
    bodies: NotRequired[str]  # a file holding the pool
    pool: NotRequired[PoolRecord]  # the pool inline (or read from ``bodies``)
    summarize: NotRequired[bool]  # the master writes the summary and report too
    sla: NotRequired[str | None]
    rps: NotRequired[float]  # open loop without a shape: a constant rate
    late_threshold_s: NotRequired[float]  # open loop: a send this late counts as late


class EncodedWindow(TypedDict):
    """One second of one generator's results, histograms in HdrHistogram's wire format."""

    second: int
    latency: dict[str, str]  # request kind -> encoded histogram (from the scheduled time)
    service: dict[str, str]  # request kind -> encoded histogram (from the actual send)
    failures: list[tuple[str, str, int]]  # (kind, error, count); lists once through JSON
    late: int
    dropped: int


class LocustResults(TypedDict):
    """What the master writes at the end of a test (``RESULTS_FILE``)."""

    start: float | None  # the test's start and end, Unix time
    end: float | None
    windows: list[EncodedWindow]
    workers: list[tuple[int, int | None]]  # (second, connected workers) each second
    cpu_warnings: int  # Locust's warnings that a generator's CPU was saturated
    expected_workers: int | None


class Progress(TypedDict):
    """The master's line for each second, for the live view."""

    users: int
    requests: int
    failures: int
    p95_ms: float | None
    second: NotRequired[int]
    workers: NotRequired[int | None]  # connected workers (a distributed run)
