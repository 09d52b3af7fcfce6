"""From merged histograms and resource samples to the run's summary and time series.

Pure functions: the inputs are the merged ``Store``, the resource samples
(one per second) and the run's configuration; nothing here reads a clock.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from mlscale.loadtest.histograms import Store, latency_ms, new_histogram, values_at_percentiles
from mlscale.loadtest.shapes import Shape
from mlscale.loadtest.sla import Sla
from mlscale.schemas.loadtest import LoadTestSummary

# A load generator process busier than this is not measuring the server any more.
GENERATOR_CPU_LIMIT = 0.9
# Open loop: more late or dropped sends than this share invalidates the run.
LATE_LIMIT = 0.01


@dataclass(frozen=True)
class Sample:
    """Resources in one second: cores used and memory of the server, generator CPU."""

    second: int
    server_cpu: float | None
    server_rss_mb: float | None
    generator_cpu: float | None  # cores, all generator processes together
    generator_cpu_max: float | None  # the busiest single generator process, in cores
    # From the server's /metrics, when it has mlscale's (None otherwise).
    in_flight: float | None = None
    queue_wait_ms: float | None = None  # mean over the second
    batch_rows: float | None = None  # mean rows per predict call over the second


def _merged(store: Store, attribute: str = "latency", kind: str | None = None):
    total = new_histogram()
    for window in store.windows.values():
        for name, histogram in getattr(window, attribute).items():
            if kind is None or name == kind:
                total.add(histogram)
    return total


def warmup_s(shape: Shape, config: dict) -> float:
    """Seconds from the start until a closed loop's first users all run: spawned at the
    spawn rate, then each sends its first request within one think time."""
    if shape.kind != "users" or not shape.stages:
        return 1.0
    first = max(shape.stages[0].start_value, shape.stages[0].end_value)
    spawn_rate = max(float(config.get("spawn_rate") or 1.0), 1e-9)
    return first / spawn_rate + float(config.get("think_time_s") or 0.0) + 1.0


def build_summary(
    store: Store,
    *,
    start: float,
    end: float,
    shape: Shape,
    samples: list[Sample],
    sla: Sla | None,
    problems: list[str],
    config: dict,
) -> LoadTestSummary:
    """The run's summary: counts, rates, exact percentiles, validity and SLA verdict."""
    overall = _merged(store)
    failures: Counter[tuple[str, str]] = Counter()  # (kind, error) -> count
    for window in store.windows.values():
        failures.update(window.failures)
    failed = sum(failures.values())
    successes = overall.get_total_count()
    requests = successes + failed
    duration = max(end - start, 1e-9)
    late = sum(w.late for w in store.windows.values())
    dropped = sum(w.dropped for w in store.windows.values())
    kinds = sorted({k for w in store.windows.values() for k in w.latency} | {k for k, _ in failures})

    problems = list(problems)
    # Starting thousands of users and opening their connections keeps a generator busy
    # for a second or two, as any Locust run does; what makes it the bottleneck is
    # being that busy while the load is held.
    warm = start + warmup_s(shape, config)
    busiest = max(
        (s.generator_cpu_max for s in samples if s.generator_cpu_max is not None and s.second >= warm),
        default=None,
    )
    if busiest is not None and busiest > GENERATOR_CPU_LIMIT:
        problems.append(
            f"a load generator process used {busiest * 100:.0f} % of a core: it was the "
            "bottleneck, not the server. Use more --workers (one per free core), or a "
            "second machine."
        )
    if shape.kind == "rps" and requests + dropped:
        share = (late + dropped) / (requests + dropped)
        if share > LATE_LIMIT:
            problems.append(
                f"{share * 100:.1f} % of the requests were sent late or not at all: the "
                "generator could not keep the schedule. Use more --workers, or raise "
                "--max-in-flight if the server is slow."
            )
    if successes == 0:
        problems.append(
            "no request got a successful answer: check the target address, the path and "
            "that the server is up (see the errors)."
        )

    error_rate = failed / requests if requests else 1.0
    latency = latency_ms(overall)
    summary = {
        "requests": requests,
        "failures": failed,
        "error_rate": error_rate,
        "rps": requests / duration,
        "duration_s": duration,
        "latency_ms": latency,
        "by_kind": {
            kind: {
                "requests": _merged(store, kind=kind).get_total_count()
                + sum(n for (k, _), n in failures.items() if k == kind),
                "failures": sum(n for (k, _), n in failures.items() if k == kind),
                "latency_ms": latency_ms(_merged(store, kind=kind)),
            }
            for kind in kinds
        },
        "errors": [{"kind": k, "error": e, "count": n} for (k, e), n in failures.most_common()],
        "valid": not problems,
        "problems": problems,
        "sla": sla.evaluate(latency, error_rate) if sla else None,
        "config": config,
    }
    if shape.kind == "rps":
        summary["open_loop"] = {
            "late": late,
            "dropped": dropped,
            "service_latency_ms": latency_ms(_merged(store, "service")),
        }
    # Through the schema: the keys set are the keys summary.json has always had.
    return LoadTestSummary.model_validate(summary)


def timeseries(store: Store, *, start: float, shape: Shape, samples: list[Sample]) -> list[dict]:
    """One row per second of the run, from its first second to its last."""
    by_second = {s.second: s for s in samples}
    seconds = sorted(set(store.windows) | set(by_second))
    if not seconds:
        return []
    first = int(start)
    rows = []
    for second in range(first, seconds[-1] + 1):
        window = store.windows.get(second)
        merged = new_histogram()
        failures = 0
        if window is not None:
            for histogram in window.latency.values():
                merged.add(histogram)
            failures = sum(window.failures.values())
        latency = latency_ms(merged)
        sample = by_second.get(second)
        elapsed = second - first
        target = shape.value_at(elapsed)
        rows.append(
            {
                "elapsed_s": elapsed,
                "stage": shape.stage_index(elapsed),
                "users": target if shape.kind == "users" else None,
                "target_rps": target if shape.kind == "rps" else None,
                "rps": merged.get_total_count() + failures,
                "failures_per_s": failures,
                "p50_ms": latency["p50"],
                "p95_ms": latency["p95"],
                "p99_ms": latency["p99"],
                "server_cpu": sample.server_cpu if sample else None,
                "server_rss_mb": sample.server_rss_mb if sample else None,
                "generator_cpu": sample.generator_cpu if sample else None,
                "in_flight": sample.in_flight if sample else None,
                "queue_wait_ms": sample.queue_wait_ms if sample else None,
                "batch_rows": sample.batch_rows if sample else None,
            }
        )
    return rows


def latency_distribution(store: Store, points: int = 200) -> list[tuple[float, float]]:
    """(percentile, milliseconds) pairs over the whole run, for the distribution chart."""
    overall = _merged(store)
    if overall.get_total_count() == 0:
        return []
    # Denser towards the tail: 0, 50, 75, 87.5, … as in HdrHistogram's own plots.
    qs = [100 * (1 - 0.5 ** (i * 10 / points)) for i in range(points + 1)]
    return [(q, value / 1000) for q, value in zip(qs, values_at_percentiles(overall, qs), strict=True)]
