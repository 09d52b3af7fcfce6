"""The simulator at scale: a long run's page stays light while its data file keeps
every tick and its chart keeps the extremes; the shortcuts taken for speed change
no number."""

from __future__ import annotations

import base64
import csv
import dataclasses
import gzip
import json
import os
import re

import numpy as np
import pytest

from mlscale.report import plotly_packed
from mlscale.report.simulate import envelope
from mlscale.simulate import engine
from mlscale.simulate.engine import COLUMNS, simulate
from mlscale.simulate.presets import build_preset
from mlscale.simulate.profile import daily_shape
from mlscale.simulate.queue import PodModel
from mlscale.simulate.results import summarize, write_outputs
from mlscale.simulate.settings import HpaSettings, NodePool, SimSettings
from tests.support.pages import CHROMIUM, check_page, has_chart_data, open_in_browser


def day_at_scale(hours: float = 6.0):
    """A smaller benchmarks/simulate_bench.py: up to 600 pods, a daily cycle."""
    model = PodModel(servers=4, service_rate=20.0)
    settings = SimSettings(
        pool=NodePool(machine_type="e2-standard-16", min_nodes=5, max_nodes=60),
        hpa=HpaSettings(target=80, min_replicas=20, max_replicas=600),
    )
    return settings, daily_shape(30_000, hours=hours, peak_hour=hours / 2), model


def chart_traces(page: str, element: str = "timeline") -> dict[str, dict]:
    """The figure a page draws, by trace name, typed arrays decoded."""
    found = re.search(
        rf'<script type="application/json" data-plotly-figure="{element}">(.*?)</script>', page, re.S
    )
    traces = {}
    for trace in json.loads(found[1])["data"]:
        for axis in ("x", "y"):
            value = trace.get(axis)
            if isinstance(value, dict):
                trace[axis] = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
            elif value is not None:
                trace[axis] = np.array(value, dtype=float)
        traces[trace["name"]] = trace
    return traces


@pytest.fixture(scope="module")
def long_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("long")
    run = simulate(*day_at_scale(), name="six hours at scale")
    summary = summarize(run)
    write_outputs(str(out), run, summary)
    return run, out


def test_a_long_run_s_page_is_light_its_data_file_complete_and_its_chart_keeps_the_peaks(long_run):
    run, out = long_run
    ticks = len(run.columns["time_s"])
    page = (out / "report.html").read_text(encoding="utf-8")
    assert os.path.getsize(out / "report.html") < 2_000_000
    assert check_page(page) == [] and has_chart_data(page) and "<script src" not in page
    with open(out / "timeseries.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == ticks and list(rows[0]) == list(COLUMNS)
    load = np.array([float(r["load"]) for r in rows])
    assert np.allclose(load, run.columns["load"], rtol=1e-5)
    traces = chart_traces(page)
    for column, name in (
        ("load", "load (requests/s)"),
        ("pods_ready", "ready"),
        ("p95_ms", "p95 (ms)"),
        ("cpu_utilization", "pod CPU (% of request)"),
    ):
        trace, series = traces[name], run.columns[column]
        assert len(trace["y"]) < ticks / 4, column  # downsampled
        # The peak is drawn at its value (as the page stores it) and at its time.
        peak = np.nanmax(series)
        drawn = trace["x"][trace["y"] == np.asarray(peak).astype(trace["y"].dtype)]
        minutes = run.columns["time_s"][series == peak] / 60
        assert np.isclose(drawn[:, None], minutes[None, :], atol=1e-3).any(), column


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_a_long_run_s_page_draws_in_a_browser(long_run):
    _, out = long_run
    dom, console = open_in_browser(str(out / "report.html"))
    assert console == []
    assert "plot-container" in dom and dom.count('class="trace scatter') >= 12


def test_the_envelope_keeps_a_one_tick_spike_a_dip_and_an_outage():
    values = np.full(100_000, 50.0)
    values[12_345] = 900.0  # one tick
    values[54_321] = 1.0
    values[70_000:70_050] = np.nan  # 50 s with no pod serving
    index = envelope(values, buckets=500)
    assert len(index) < 1_000
    kept = values[index]
    assert 900.0 in kept and 1.0 in kept and np.isnan(kept).any()
    assert list(index) == sorted(index)
    # A flat series is its two ends.
    assert list(envelope(np.full(100_000, 3.0), buckets=500)) == [0, 99_999]
    # A short one keeps every tick.
    assert list(envelope(np.arange(10.0), buckets=500)) == list(range(10))


@pytest.mark.parametrize("size", [0, 1, 6, 7, 8, 9, 1_000, 4_096])
def test_packing_is_reversible_and_safe_in_a_script_element(size):
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    text = plotly_packed.pack(data)
    assert plotly_packed.unpack(text) == data
    assert not {"<", "\r", "\0"} & set(text)


def test_the_packed_library_is_plotly_js():
    from plotly.offline import get_plotlyjs

    packed = plotly_packed.packed_plotlyjs()
    assert gzip.decompress(plotly_packed.unpack(packed)).decode("utf-8") == get_plotlyjs()
    assert len(packed.encode("utf-8")) < 0.4 * len(get_plotlyjs())


def runs_both_ways(settings, shape, model, monkeypatch):
    """(a run with the shortcut, how many syncs took it, the run without it)."""
    taken = []
    alike = engine.hpa_rules.cpu_replicas_alike
    monkeypatch.setattr(engine.hpa_rules, "cpu_replicas_alike", lambda **kw: taken.append(1) or alike(**kw))
    fast = simulate(settings, shape, model)
    monkeypatch.setattr(engine._Engine, "settled_shortcut", False)
    general = simulate(settings, shape, model)
    monkeypatch.undo()
    return fast, len(taken), general


@pytest.mark.parametrize("case", ["reference-cluster-autoscaler", "reference-hpa", "day", "tuned"])
def test_the_settled_deployment_shortcut_changes_no_number(case, monkeypatch):
    """The HPA's shortcut for a Deployment whose pods are all settled gives what the
    per-pod path gives, to the bit, and the events at the same instants."""
    if case == "day":
        settings, shape, model = day_at_scale()
    else:
        experiment = build_preset("reference-cluster-autoscaler" if case == "tuned" else case)
        settings, shape, model = experiment.settings, experiment.shape, experiment.model
        if case == "tuned":
            from mlscale.simulate.compare import TUNED_BEHAVIOR

            settings = dataclasses.replace(
                settings, hpa=dataclasses.replace(settings.hpa, target=60, behavior=TUNED_BEHAVIOR)
            )
    fast, shortcuts, general = runs_both_ways(settings, shape, model, monkeypatch)
    assert shortcuts > 0
    assert fast.events == general.events
    for name in general.columns:
        assert fast.columns[name].tobytes() == general.columns[name].tobytes(), name
    assert any(e["kind"] == "hpa_scale" for e in general.events)
