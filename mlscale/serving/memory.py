"""glibc's malloc, told to hand large buffers back to the system.

glibc serves a block above its mmap threshold (128 KiB) from a fresh mapping,
returned to the system when freed. But after freeing such a block it raises the
threshold to that block's size, up to 32 MiB: after one peak of large batches,
every request body and batch array below the new threshold comes from the heap,
which fragments and stays at its peak size. A model server's resident memory
then grows by a step at each new peak, and never comes down.

Setting the threshold explicitly turns that adjustment off (``MLSCALE_MMAP_THRESHOLD``
sets it in bytes; 0 leaves glibc's default). `benchmarks/memory_peak_bench.py`
measures both side by side: peaks of large batches, then steady load.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

logger = logging.getLogger("mlscale.serving")

M_MMAP_THRESHOLD = -3  # from glibc's malloc.h
DEFAULT_THRESHOLD = 128 * 1024  # glibc's own starting value
THRESHOLD_ENV = "MLSCALE_MMAP_THRESHOLD"


def fix_mmap_threshold() -> bool:
    """Fix glibc's mmap threshold for this process (``MLSCALE_MMAP_THRESHOLD`` bytes,
    128 KiB by default); False if it was left alone: set to 0, or no glibc (musl,
    macOS have no such adjustment to turn off)."""
    try:
        threshold = int(os.environ.get(THRESHOLD_ENV, DEFAULT_THRESHOLD))
    except ValueError:
        logger.warning("%s is not a number of bytes; using %d", THRESHOLD_ENV, DEFAULT_THRESHOLD)
        threshold = DEFAULT_THRESHOLD
    if threshold <= 0:
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    done = mallopt(M_MMAP_THRESHOLD, threshold) == 1
    if not done:
        logger.debug("mallopt(M_MMAP_THRESHOLD) refused; memory may grow after load peaks")
    return done
