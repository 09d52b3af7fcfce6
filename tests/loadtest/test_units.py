"""The load tester's pure parts: shapes, SLA expressions, histogram merging, summaries."""

from __future__ import annotations

import random

import pytest
from hdrh.histogram import HdrHistogram

from mlscale.errors import ConfigurationError
from mlscale.loadtest import shapes
from mlscale.loadtest.bodies import encode_body, parse_mix
from mlscale.loadtest.histograms import (
    Recorder,
    Store,
    latency_ms,
    mean_us,
    new_histogram,
    record,
    values_at_percentiles,
)
from mlscale.loadtest.results import Sample, build_summary, timeseries
from mlscale.loadtest.sla import parse_sla


@pytest.mark.parametrize(
    ("shape", "t", "value"),
    [
        (shapes.steps("users", "60:10,60:20,60:40"), 0, 10),
        (shapes.steps("users", "60:10,60:20,60:40"), 59.9, 10),
        (shapes.steps("users", "60:10,60:20,60:40"), 60, 20),
        (shapes.steps("users", "60:10,60:20,60:40"), 179.9, 40),
        (shapes.steps("users", "60:10,60:20,60:40"), 180, None),
        (shapes.ramp("rps", 0, 100, 10), 5, 50),
        (shapes.constant("users", 7, 30), 29, 7),
        (shapes.spike("rps", 10, 50, 60, 20, 10), 19, 10),
        (shapes.spike("rps", 10, 50, 60, 20, 10), 20, 50),
        (shapes.spike("rps", 10, 50, 60, 20, 10), 30, 10),
    ],
)
def test_shape_values_over_time(shape, t, value):
    assert shape.value_at(t) == value


def test_profile_rows_hold_until_the_next(tmp_path):
    profile = tmp_path / "p.csv"
    profile.write_text("time_s,users\n0,5\n30,50\n90,10\n")
    shape = shapes.read_profile(str(profile))
    assert shape.kind == "users" and shape.duration_s == 150  # the last row holds 60 s
    assert [shape.value_at(t) for t in (0, 29, 30, 89, 90, 149)] == [5, 5, 50, 50, 10, 10]
    assert shapes.read_profile(str(profile), duration_s=100).duration_s == 100


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("time_s,users\n5,1\n10,2\n", "must start at time_s 0"),
        ("time_s,users,rps\n0,1,1\n", "exactly one of the columns"),
        ("seconds,users\n0,1\n", "needs a header"),
        ("time_s,rps\n0,x\n", "not numbers"),
        ("time_s,rps\n0,1\n", "has one row"),
    ],
)
def test_bad_profiles_say_what_is_wrong(tmp_path, content, message):
    profile = tmp_path / "p.csv"
    profile.write_text(content)
    with pytest.raises(ConfigurationError, match=message):
        shapes.read_profile(str(profile))


@pytest.mark.parametrize("spec", ["60", "60:x", "0:10", "-5:1", ""])
def test_bad_steps(spec):
    with pytest.raises(ConfigurationError):
        shapes.steps("users", spec)


def test_shapes_round_trip_through_json():
    shape = shapes.steps("rps", "10:5,20:50")
    assert shapes.Shape.from_dict(shape.to_dict()) == shape


@pytest.mark.parametrize(
    ("expr", "latency", "error_rate", "met"),
    [
        ("p95<1000ms", {"p95": 999.0}, 0.0, True),
        ("p95<1000ms", {"p95": 1000.0}, 0.0, False),
        ("p95<=1s", {"p95": 1000.0}, 0.0, True),
        ("p99<0.5s,errors<1%", {"p99": 400.0}, 0.02, False),
        ("p99<0.5s,errors<1%", {"p99": 400.0}, 0.001, True),
        ("pmax<2s", {"max": 1500.0}, 0.0, True),
        ("p95<1s", {"p95": None}, 0.0, False),
    ],
)
def test_sla_verdicts(expr, latency, error_rate, met):
    assert parse_sla(expr).evaluate(latency, error_rate)["met"] is met


@pytest.mark.parametrize("expr", ["p95", "p95>1s", "p42.5x<1s", "errors<1ms", "p95<1%", "p77<1s"])
def test_bad_sla_expressions(expr):
    with pytest.raises(ConfigurationError):
        parse_sla(expr)


def test_merged_histograms_equal_one_histogram_of_everything():
    rng = random.Random(1)
    values = [rng.lognormvariate(-3, 1) for _ in range(20_000)]
    single = new_histogram()
    for value in values:
        record(single, value)
    # Three "processes", each recording a share, spread over several seconds.
    store = Store()
    for part in range(3):
        recorder = Recorder()
        for i, value in enumerate(values[part::3]):
            recorder.success(100 + i % 7, "1 row", value)
        store.add(recorder.drain())
    merged = new_histogram()
    for window in store.windows.values():
        merged.add(window.latency["1 row"])
    assert latency_ms(merged) == latency_ms(single)
    assert merged.get_total_count() == len(values)


def test_three_significant_digits_where_locust_has_two():
    histogram = new_histogram()
    record(histogram, 1.040)
    assert latency_ms(histogram)["p95"] == pytest.approx(1040, rel=1e-3)


def test_summary_and_time_series_from_known_windows():
    recorder = Recorder()
    for second, count in ((1000, 10), (1001, 20)):
        for _ in range(count):
            recorder.success(second, "1 row", 0.050)
    recorder.failure(1001, "1 row", "HTTP 500")
    store = Store()
    store.add(recorder.drain())
    shape = shapes.steps("users", "1:5,1:10")
    samples = [Sample(1000, 0.5, 100.0, 0.1, 0.1), Sample(1001, 0.9, 110.0, 0.2, 0.2)]
    summary = build_summary(
        store,
        start=1000.0,
        end=1002.0,
        shape=shape,
        samples=samples,
        sla=parse_sla("p95<100ms,errors<1%"),
        problems=[],
        config={},
    )
    assert (summary.requests, summary.failures, summary.rps) == (31, 1, 15.5)
    assert summary.latency_ms["p50"] == pytest.approx(50, rel=1e-3)
    assert summary.sla is not None and summary.sla.met is False  # 1 error in 31 is above 1 %
    assert summary.valid
    rows = timeseries(store, start=1000.0, shape=shape, samples=samples)
    assert [(r["elapsed_s"], r["users"], r["rps"], r["failures_per_s"]) for r in rows] == [
        (0, 5, 10, 0),
        (1, 10, 21, 1),
    ]
    assert rows[1]["server_cpu"] == 0.9


def test_a_generator_saturated_while_the_load_holds_invalidates_the_run():
    recorder = Recorder()
    for second in range(1000, 1010):
        recorder.success(second, "1 row", 0.01)
    store = Store()
    store.add(recorder.drain())
    # 2,000 users spawned at 1,000/s, 1 s think time: all running from 4 s on.
    config = {"spawn_rate": 1000, "think_time_s": 1.0}
    shape = shapes.constant("users", 2000, 10)

    def verdict(busy_seconds):
        samples = [
            Sample(1000 + i, 0.5, 1.0, cpu, cpu)
            for i, cpu in enumerate(0.95 if i in busy_seconds else 0.5 for i in range(10))
        ]
        return build_summary(
            store,
            start=1000.0,
            end=1010.0,
            shape=shape,
            samples=samples,
            sla=None,
            problems=[],
            config=config,
        )

    # Busy while starting 2,000 users and their connections: any generator is.
    assert verdict({0, 1, 2, 3}).valid
    saturated = verdict({6})
    assert not saturated.valid
    assert "was the bottleneck" in saturated.problems[0]


def test_request_mix_and_body_formats():
    import pandas as pd

    kinds = parse_mix("1:90,100:10")
    assert [(k.name, k.rows, k.weight) for k in kinds] == [("1 row", 1, 90), ("100 rows", 100, 10)]
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]})
    assert (
        encode_body(frame, "split")
        == '{"dataframe_split": {"columns": ["a", "b"], "data": [[1.0, 3.0], [2.0, 4.0]]}}'
    )
    assert encode_body(frame, "legacy-split").startswith('{"columns": ["a", "b"]')
    assert encode_body(frame, "csv") == "a,b\n1.0,3.0\n2.0,4.0\n"
    with pytest.raises(ConfigurationError):
        parse_mix("1:0")


def test_rows_generated_from_a_signature_fit_it(model_paths):
    from mlscale.loadtest.bodies import frame_from_signature

    frame = frame_from_signature(model_paths["sklearn_pipeline"], rows=20)
    assert list(frame.columns) == ["color", "size"]
    assert set(frame["color"]) <= {"a", "b", "c", "d"} and frame["size"].dtype == float
    numeric = frame_from_signature(model_paths["xgboost"], rows=20)
    assert list(numeric.columns) == ["f0", "f1", "f2"] and numeric["f2"].dtype.kind == "i"
    with pytest.raises(ConfigurationError, match="no signature"):
        frame_from_signature(model_paths["no_signature"])


@pytest.mark.parametrize("count", [1, 2, 7, 1000, 20000])
def test_one_pass_percentiles_and_mean_equal_hdrhs_own(count):
    # The generator computes percentiles on a cumulative sum (hdrh's own walk takes
    # ~10 ms a percentile, long enough to skew what is being measured); they must be
    # HdrHistogram's values exactly, on the histogram and on its decoded copy.
    rng = random.Random(count)
    histogram = new_histogram()
    for _ in range(count):
        record(histogram, rng.lognormvariate(rng.uniform(-8, 0), rng.uniform(0.1, 2.5)))
    qs = [0.0, 0.1, 1.0, 50.0, 90.0, 95.0, 99.0, 99.9, 99.99, 100.0]
    expected = [histogram.get_value_at_percentile(q) for q in qs]
    assert values_at_percentiles(histogram, qs) == expected
    decoded = HdrHistogram.decode(histogram.encode())
    assert values_at_percentiles(decoded, qs) == expected
    assert mean_us(histogram) == pytest.approx(histogram.get_mean_value(), rel=1e-12)
    assert values_at_percentiles(new_histogram(), [50.0]) == [0]
