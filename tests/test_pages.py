"""The page checks themselves catch what they are for."""

from __future__ import annotations

import pytest

from tests.pages import CHROMIUM, check_page, open_in_browser

GOOD = "<!DOCTYPE html><html><head><title>t</title></head><body><p>ok<br></p></body></html>"


def test_a_good_page_passes():
    assert check_page(GOOD) == []


@pytest.mark.parametrize(
    ("page", "problem"),
    [
        (GOOD.replace("</p>", ""), "closes"),
        (GOOD.replace("<!DOCTYPE html>", ""), "DOCTYPE"),
        (GOOD.replace("<title>", '<script src="https://cdn.plot.ly/plotly.js"></script><title>'),
         "fetches from the network"),
        (GOOD.replace("<title>", '<link href="//fonts.example/x.css"><title>'), "network"),
    ],
)
def test_broken_pages_are_caught(page, problem):
    assert any(problem in p for p in check_page(page)), check_page(page)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_the_browser_reports_console_errors_and_runs_scripts(tmp_path):
    page = tmp_path / "page.html"
    page.write_text(GOOD.replace("</body>", "<script>document.body.id = 'ran'; "
                                 "undefinedFunction();</script></body>"))  # fmt: skip
    dom, console = open_in_browser(str(page))
    assert 'id="ran"' in dom
    assert any("undefinedFunction" in line for line in console), console
