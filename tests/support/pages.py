"""Checks on the HTML pages mlscale writes: well-formed, self-contained, and
opening in a real headless browser without console errors."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser

# Elements that never have a closing tag.
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
# Attributes through which a page fetches something.
_FETCHING = {
    ("script", "src"),
    ("link", "href"),
    ("img", "src"),
    ("iframe", "src"),
    ("source", "src"),
    ("video", "src"),
    ("audio", "src"),
}


_REMOTE = r"""(?:https?:)?//"""
# Style that fetches as the page loads: url(...) and @import of a remote address,
# in a <style> element or a style="" attribute. plotly.js, inlined in the reports,
# has "https://" in strings and comments; only these forms would fetch at load.
_CSS_FETCH = re.compile(r"""url\(\s*['"]?""" + _REMOTE + r"""|@import\s+(?:url\(\s*)?['"]?""" + _REMOTE, re.I)
# A script fetching a remote address: fetch("https://…"), or XMLHttpRequest's
# open("GET", "https://…"); the inlined plotly.js has neither form.
_SCRIPT_FETCH = re.compile(r"""(?:\bfetch\(\s*|\.open\(\s*['"][A-Z]+['"]\s*,\s*)['"`]""" + _REMOTE)


class _Checker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.problems: list[str] = []
        self.fetches: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if (tag, name) in _FETCHING and value and re.match(_REMOTE, value):
                self.fetches.append(f"<{tag} {name}={value}>")
            if name == "style" and value and _CSS_FETCH.search(value):
                self.fetches.append(f"<{tag} style={value}>")
        if tag not in _VOID:
            self.open.append(tag)

    def handle_data(self, data):
        inside = self.open[-1] if self.open else None
        if inside == "style" and (found := _CSS_FETCH.search(data)):
            self.fetches.append(f"<style> {data[found.start() : found.start() + 80]}")
        if inside == "script" and (found := _SCRIPT_FETCH.search(data)):
            self.fetches.append(f"<script> {data[found.start() : found.start() + 80]}")

    def handle_endtag(self, tag):
        if tag in _VOID:
            return
        if not self.open or self.open[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.open[-1] if self.open else 'nothing'}")
            if tag in self.open:  # recover like a browser: close up to the matching tag
                while self.open.pop() != tag:
                    pass
            return
        self.open.pop()


def check_page(text: str) -> list[str]:
    """Problems with a page: unbalanced tags, a missing doctype, network fetches."""
    checker = _Checker()
    checker.feed(text)
    checker.close()
    problems = list(checker.problems)
    if checker.open:
        problems.append(f"unclosed: {checker.open}")
    if not text.lstrip().lower().startswith("<!doctype html>"):
        problems.append("no <!DOCTYPE html>")
    problems += [f"fetches from the network: {f}" for f in checker.fetches]
    return problems


def has_chart_data(text: str) -> bool:
    """A plotly chart drawn from data in the page: x values as a list, or as the
    base64 array (``{"dtype": …, "bdata": …}``) newer plotly writes for numpy data."""
    return "Plotly.newPlot" in text and re.search(r'"x":\s*(\[|\{"dtype")', text) is not None


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# The flags a closed network needs (no background connections) and a root user needs.
_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=5000",
]


def open_in_browser(path: str) -> tuple[str, list[str]]:
    """The DOM after the page's scripts ran, and what the page wrote to its console."""
    with tempfile.TemporaryDirectory() as profile:
        run = subprocess.run(
            [CHROMIUM, *_FLAGS, f"--user-data-dir={profile}", "--dump-dom", f"file://{path}"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    return run.stdout, console
