"""The page checks themselves catch what they are for."""

from __future__ import annotations

import pytest

from tests.support.pages import CHROMIUM, check_page, has_chart_data, open_in_browser

GOOD = "<!DOCTYPE html><html><head><title>t</title></head><body><p>ok<br></p></body></html>"


def test_a_good_page_passes():
    assert check_page(GOOD) == []


def test_addresses_that_fetch_nothing_at_load_pass():
    """A link to follow, a relative stylesheet, a script that only names an address
    (plotly.js, inlined, has many): none of them fetches when the page opens."""
    page = GOOD.replace(
        "<title>",
        "<style>p { background: url(data:image/png;base64,AA==) }</style>"
        '<link rel="stylesheet" href="style.css"><title>',
    ).replace(
        "</body>",
        '<a href="https://mlflow.org">MLflow</a>'
        '<script>const docs = "https://plotly.com/javascript/";</script></body>',
    )
    assert check_page(page) == []


@pytest.mark.parametrize(
    ("page", "problem"),
    [
        (GOOD.replace("</p>", ""), "closes"),
        (GOOD.replace("<!DOCTYPE html>", ""), "DOCTYPE"),
        (
            GOOD.replace("<title>", '<script src="https://cdn.plot.ly/plotly.js"></script><title>'),
            "fetches from the network",
        ),
        (GOOD.replace("<title>", '<link href="//fonts.example/x.css"><title>'), "network"),
        (GOOD.replace("<title>", '<link rel="stylesheet" href="http://x.example/a.css"><title>'), "network"),
        (
            GOOD.replace(
                "<title>", "<style>body { background: url('https://x.example/a.png') }</style><title>"
            ),
            "network",
        ),
        (GOOD.replace("<title>", '<style>@import "https://x.example/a.css";</style><title>'), "network"),
        (GOOD.replace("<title>", "<style>@import url(//x.example/a.css);</style><title>"), "network"),
        (GOOD.replace("<p>", '<p style="background:url(http://x.example/a.png)">'), "network"),
        (GOOD.replace("</body>", '<script>fetch("https://x.example/data.json")</script></body>'), "network"),
        (
            GOOD.replace(
                "</body>",
                "<script>const r = new XMLHttpRequest(); "
                "r.open('GET', 'https://x.example/d');</script></body>",
            ),
            "network",
        ),
    ],
)
def test_broken_pages_are_caught(page, problem):
    assert any(problem in p for p in check_page(page)), check_page(page)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_the_browser_reports_console_errors_and_runs_scripts(tmp_path):
    page = tmp_path / "page.html"
    page.write_text(
        GOOD.replace("</body>", "<script>document.body.id = 'ran'; undefinedFunction();</script></body>")
    )
    dom, console = open_in_browser(str(page))
    assert 'id="ran"' in dom
    assert any("undefinedFunction" in line for line in console), console


def test_the_policy_comparison_page_is_well_formed_and_self_contained(tmp_path):
    """``simulate --compare`` writes a page of its own (the demo's reports are
    checked by test_demo): the simulator is pure and fast, so it is checked here."""
    from click.testing import CliRunner

    from mlscale.cli.main import main

    # Ten minutes of load, not a preset's 75: each policy's own page is drawn too,
    # and the pages' event markers take most of the run.
    profile = tmp_path / "load.csv"
    profile.write_text("time_s,users\n0,10\n300,200\n600,10\n")
    out = tmp_path / "compare"
    result = CliRunner().invoke(
        main,
        [
            "simulate",
            "--profile",
            str(profile),
            "--max-nodes",
            "6",
            "--max-pods",
            "20",
            "--compare",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    text = (out / "report.html").read_text()
    assert check_page(text) == []
    assert has_chart_data(text)
