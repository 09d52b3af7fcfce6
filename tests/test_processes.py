"""The free-port and process-group helpers every command and test share."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import psutil
import pytest

from mlscale.processes import free_port, signal_group, start_group, stop_group, stop_groups

# They start real process groups (Python children that sleep or ignore SIGTERM).
pytestmark = pytest.mark.slow


def test_a_free_port_can_be_bound():
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_stop_group_stops_the_leader_and_its_children():
    # The shell starts a child and waits: a signal to the shell alone would leave it.
    process = start_group(["sh", "-c", "sleep 60 & wait"], stdout=subprocess.DEVNULL)
    children = []
    while not children:
        children = psutil.Process(process.pid).children()
    assert stop_group(process, grace_s=10) == -signal.SIGTERM
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive


def test_stop_group_kills_what_ignores_sigterm():
    ignore = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(60)"
    process = start_group([sys.executable, "-c", ignore], stdout=subprocess.PIPE)
    process.stdout.readline()  # the handler is in place
    assert stop_group(process, grace_s=0.5) == -signal.SIGKILL
    process.stdout.close()


def test_stopping_a_finished_group_is_harmless():
    process = start_group(["true"])
    process.wait()
    assert signal_group(process, signal.SIGTERM) is False
    assert stop_group(process, grace_s=1) == 0
    stop_groups([process], grace_s=1)
