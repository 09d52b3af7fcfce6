"""Log output for mlscale's own messages, in the same shape as uvicorn's."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str = "info") -> None:
    """Show mlscale's messages at ``level`` on stderr (once per process)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)-9s %(message)s", stream=sys.stderr)
    logging.getLogger("mlscale").setLevel(level.upper())
