"""Ctrl-C and SIGTERM unwind the same way, once; what is left is stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from mlscale.interrupts import signals_unwind
from tests.support.leftovers import processes_mentioning


@pytest.mark.parametrize(
    ("signum", "name", "status"), [(signal.SIGTERM, "SIGTERM", 143), (signal.SIGINT, "Ctrl-C", 130)]
)
def test_a_signal_unwinds_once_and_the_handlers_come_back(signum, name, status):
    if signum == signal.SIGINT and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        pytest.skip("SIGINT is ignored here (a background job), and stays ignored on purpose")
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    cleaned = False
    with signals_unwind() as caught, pytest.raises(KeyboardInterrupt):
        try:
            os.kill(os.getpid(), signum)
            time.sleep(5)  # the handler raises before this ends
        finally:
            os.kill(os.getpid(), signum)  # a second one, during the clean-up: ignored
            cleaned = True
    assert cleaned and (caught.name, caught.exit_status) == (name, status)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


@pytest.mark.slow
def test_stop_descendants_stops_a_child_in_a_session_of_its_own(tmp_path):
    """As the demo's children are: no terminal signal reaches them."""
    marker = str(tmp_path)
    script = (
        "import subprocess, sys\n"
        "from mlscale.interrupts import stop_descendants\n"
        "subprocess.Popen(['sleep', '60'], start_new_session=True)\n"
        "print(len(stop_descendants()))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MLSCALE_TEST_MARK": marker},
    )
    assert run.stdout.strip() == "1", run.stderr
    deadline = time.monotonic() + 5
    while (left := processes_mentioning(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == []
