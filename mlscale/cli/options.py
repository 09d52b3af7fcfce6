"""Parsing helpers shared by the commands."""

from __future__ import annotations

import re

import click

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "kib": 2**10,
    "m": 10**6, "mb": 10**6, "mib": 2**20,
    "g": 10**9, "gb": 10**9, "gib": 2**30,
    "t": 10**12, "tb": 10**12, "tib": 2**40,
}  # fmt: skip


class ByteSize(click.ParamType):
    """A size such as ``100MB``, ``64KiB`` or ``1048576`` (bytes)."""

    name = "SIZE"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        match = _SIZE.match(str(value))
        unit = (match.group(2) or "").lower() if match else None
        if match is None or unit not in _UNITS:
            self.fail(f"{value!r} is not a size; write it like 100MB, 64KiB or 1048576.", param, ctx)
        size = int(float(match.group(1)) * _UNITS[unit])
        if size <= 0:
            self.fail("the size must be positive.", param, ctx)
        return size
