"""Every shell command in the README runs, so the README cannot drift.

The README's ```bash blocks are run in order, as one script, with the venv
first on PATH, in an empty folder that has the repository's deploy/ (the
README's commands run from a clone). A block that cannot run here says why in
a comment just above it: ``<!-- not run: the reason -->`` (a cluster, a
command that is this test suite itself). Load tests and searches are
shortened by the rewrites below, and only those: everything else runs as
written.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mlscale.processes import free_port

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

_BLOCK = re.compile(r"(?:<!-- not run: (?P<why>[^>]*?) -->\s*\n)?```bash\n(?P<body>.*?)```", re.S)
# Any fenced block, whatever its language: a command fenced as text, sh, console
# or nothing would escape both the run and the reason.
_FENCE = re.compile(r"(?:<!-- not run: (?P<why>[^>]*?) -->\s*\n)?```(?P<lang>[\w-]*)\n(?P<body>.*?)```", re.S)
# A line that runs one of this repository's commands (a shell prompt allowed).
# Not output such as "mlscale serve:   2539 req/s".
_COMMAND = re.compile(r"^\s*(?:\$ )?(?:(?:mlscale|make)\s+[a-z][\w-]*(?:\s|$)|(?:\./)?\.venv/bin/)", re.M)

# Long-running values shortened for the test, as (written, run) pairs.
REWRITES = [
    ("--duration 60", "--duration 3"),
    ("60:10,60:50,60:100", "2:10,2:50,2:100"),
    (r"\n0,10\n10,50\n20,100\n", r"\n0,10\n1,50\n2,100\n"),
    (
        "--cpus 0.25,0.5,1 --rows-per-request 1000",
        "--cpus 0.25 --rows-per-request 1000 --quick --start-load 32",
    ),
]
# The examples' port, moved to a free one in case 5000 is taken here.
PORT_FORMS = ("127.0.0.1:5000", "localhost:5000", "-p 5000")


def blocks() -> list[tuple[str | None, str]]:
    """(reason it is not run or None, the block's text), in README order."""
    return [(m["why"], m["body"]) for m in _BLOCK.finditer(README.read_text())]


def test_every_block_is_run_or_says_why_not():
    found = blocks()
    assert len(found) >= 8, "the README lost its examples?"
    for why, body in found:
        assert why is None or len(why.strip()) > 10, f"say why this block is not run:\n{body}"
    assert sum(why is None for why, _ in found) >= 5


def unmarked_commands(text: str) -> list[str]:
    """Blocks fenced as anything but bash that hold a command and no reason it is
    not run: the test would neither run them nor ask why."""
    return [
        m["body"]
        for m in _FENCE.finditer(text)
        if m["lang"] != "bash" and m["why"] is None and _COMMAND.search(m["body"])
    ]


def test_every_command_is_in_a_bash_block_or_says_why_not():
    assert unmarked_commands(README.read_text()) == []


@pytest.mark.parametrize("fence", ["text", "sh", "console", ""])
def test_a_command_fenced_otherwise_is_caught(fence):
    command = f"```{fence}\n$ mlscale demo --quick\n```\n"
    assert unmarked_commands(f"Run it:\n\n{command}") != []
    assert unmarked_commands(f"<!-- not run: a reason long enough -->\n{command}") == []
    assert unmarked_commands(f"```{fence}\nmlscale serve:   2539 req/s, p50 5 ms\n```\n") == []


# A curl command inside a fenced block (not the word in a comment after a #).
_CURL = re.compile(r"^[^#\n]*?(?:^|[\s;&|(])curl\s[^\n]*", re.M)


def curls_without_fail(text: str) -> list[str]:
    """curl commands in the README's blocks that exit 0 on an error answer: without
    ``--fail`` (or ``--fail-with-body``) a 404 or a 500 would pass the README test."""
    return [
        m.group(0).strip()
        for block in _FENCE.finditer(text)
        for m in _CURL.finditer(block["body"])
        if "--fail" not in m.group(0).split(" #", 1)[0]  # a trailing comment does not count
    ]


def test_every_curl_fails_on_an_error_answer():
    text = README.read_text()
    assert "curl " in text, "the README lost its curl examples?"
    assert curls_without_fail(text) == []


def test_a_curl_without_fail_is_caught():
    block = "```bash\n{}\n```\n"
    assert curls_without_fail(block.format("curl -s localhost:5000/ping")) != []
    assert curls_without_fail(block.format("x=1; curl -s localhost:5000/ping  # --fail")) != []
    assert curls_without_fail(block.format("curl -s --fail localhost:5000/ping")) == []
    assert curls_without_fail(block.format("curl -s --fail-with-body localhost:5000/ping")) == []
    assert curls_without_fail(block.format("ls  # curl localhost is not run here")) == []


def test_the_rewrites_all_apply():
    text = "\n".join(body for why, body in blocks() if why is None)
    for written, _ in REWRITES:
        assert written in text, f"{written!r} is no longer in the README: update REWRITES"


# The script's own limit (600 s) is the one that should speak: pytest's default
# (300 s, pyproject.toml) would stop it first.
@pytest.mark.timeout(660)
@pytest.mark.slow
def test_the_readme_commands_run(tmp_path):
    script = "\n".join(body for why, body in blocks() if why is None)
    for written, run in REWRITES:
        script = script.replace(written, run)
    (tmp_path / "deploy").symlink_to(ROOT / "deploy")
    port = str(free_port())
    for form in PORT_FORMS:
        script = script.replace(form, form.replace("5000", port))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    # Background servers the README starts are stopped when the script ends, however.
    prologue = "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n"
    run = subprocess.run(
        ["bash", "-c", prologue + script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, f"{run.stdout[-4000:]}\n--- stderr ---\n{run.stderr[-4000:]}"
