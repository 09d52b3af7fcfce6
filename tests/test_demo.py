"""The quick demo, end to end: the whole loop a newcomer runs first.

Once, in the suite's time budget; a second run in the same folder (a new model
version, reports overwritten, nothing to delete) is checked by
``test_a_second_run_reuses_the_folder`` on the cheap steps it changes.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.pages import CHROMIUM, check_page, open_in_browser

pytestmark = pytest.mark.slow


def test_the_quick_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "mlscale", "demo", "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-3000:]
    assert elapsed < 300, f"the quick demo took {elapsed:.0f} s (target: 3 minutes; 5 allowed on a busy machine)"
    assert "registered models:/wine-quality/1" in run.stdout
    assert "server stopped cleanly" in run.stdout
    assert 'status="200"} 1.0' in run.stdout
    assert re.search(r"120 concurrent users at p95 < 1 s need [\d.]+ cores?: \d+ pods? of", run.stdout)
    assert "speed-up:" in run.stdout
    # Every process it started is gone.
    leftovers = subprocess.run(["pgrep", "-f", str(out)], capture_output=True, text=True)
    assert leftovers.stdout == "", leftovers.stdout
    check_demo_pages(out)


def check_demo_pages(out: Path) -> None:
    """index.html and every report: well-formed, self-contained, with their charts'
    data, and opening in a real browser without console errors."""
    index = (out / "index.html").read_text()
    for headline in ("speed-up over mlflow models serve", "users per core at the SLA", "sizing",
                     "reference-cluster-autoscaler", "first node Ready"):
        assert headline in index, headline
    pages = [out / "index.html", out / "loadtest" / "report.html", out / "plan" / "plan.html",
             out / "simulate" / "reference-hpa" / "report.html",
             out / "simulate" / "reference-cluster-autoscaler" / "report.html"]  # fmt: skip
    for page in pages:
        text = page.read_text()
        assert check_page(text) == [], (page, check_page(text))
        if page.name != "index.html":
            assert "Plotly.newPlot" in text and '"x":[' in text.replace(" ", ""), page
    linked = re.findall(r'href="([^"#]+)"', index)
    assert len(linked) >= 6 and all((out / link).exists() for link in linked), linked
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium): browser check skipped")
    for page in pages:
        dom, console = open_in_browser(str(page))
        assert console == [], (page, console)
        if page.name != "index.html":
            assert "plot-container" in dom, f"{page}: no chart was drawn"


def test_a_second_run_reuses_the_folder(tmp_path):
    """What a second run does differently, step by step: training registers the next
    version in the same store, the overlay is rendered again over the first one's,
    the index is rewritten."""
    import os

    from mlscale.demo import _kubernetes, _train
    from mlscale.report.index import write_index
    from tests.test_capacity import _measurement
    from mlscale.capacity.planner import PlanSettings, _assemble
    from mlscale.capacity.pods import PodSpec
    from mlscale.loadtest.sla import parse_sla

    out = str(tmp_path)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    plan = _assemble(PlanSettings(sla=parse_sla("p95<1s"), kind="users", target=120, out_dir=out,
                                  pods=(PodSpec(0.25),), url="http://unused"),
                     [_measurement(0.25)])  # fmt: skip
    for version in (1, 2):
        assert _train(out, env) == f"models:/wine-quality/{version}"
        k8s = _kubernetes(plan, out)
        assert k8s["ok"], k8s["problems"]
        index = write_index(out, {"quick": True, "plan": plan, "k8s": k8s, "seconds": 1.0})
        assert "120 concurrent users" in open(index).read()
