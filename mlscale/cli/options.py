"""Parsing helpers shared by the commands."""

from __future__ import annotations

import re
from collections.abc import Callable

import click
from click.decorators import FC

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "kib": 2**10,
    "m": 10**6,
    "mb": 10**6,
    "mib": 2**20,
    "g": 10**9,
    "gb": 10**9,
    "gib": 2**30,
    "t": 10**12,
    "tb": 10**12,
    "tib": 2**40,
}


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


# The load a test applies: shared by `mlscale loadtest` and `mlscale stack loadtest`.
_LOAD_SHAPE = (
    click.option(
        "--users",
        type=click.FloatRange(min=0),
        default=None,
        help="Closed loop: concurrent users (each sends, waits for the answer, thinks).",
    ),
    click.option(
        "--rate",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        help="Open loop: requests per second, sent on schedule whatever the answers; "
        "latency counts from each request's scheduled time.",
    ),
    click.option(
        "--duration",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        help="Seconds to run a constant load (default 30), or a ramp.",
    ),
    click.option(
        "--ramp-to",
        type=click.FloatRange(min=0),
        default=None,
        help="Ramp linearly from --users/--rate to this value over --duration.",
    ),
    click.option(
        "--steps",
        default=None,
        metavar="S:V,…",
        help="Phases of SECONDS:VALUE, e.g. 60:10,60:20,60:40 (users, or rps with --rate-steps).",
    ),
    click.option("--rate-steps", is_flag=True, help="The --steps values are requests/s (open loop)."),
    click.option(
        "--spike",
        default=None,
        metavar="BASE:PEAK:AT:WIDTH",
        help="BASE load throughout, PEAK from AT s for WIDTH s (users, or rps with --rate).",
    ),
    click.option(
        "--shape",
        "shape_file",
        type=click.Path(exists=True, dir_okay=False),
        default=None,
        help="A profile CSV: time_s and users or rps; each row holds until the next.",
    ),
    click.option(
        "--spawn-rate",
        type=click.FloatRange(min=0, min_open=True),
        default=10.0,
        show_default=True,
        help="Users started per second when the user count rises.",
    ),
    click.option(
        "--think-time",
        type=click.FloatRange(min=0),
        default=1.0,
        show_default=True,
        help="Seconds a user waits between requests (the reference: 1).",
    ),
    click.option(
        "--random-think",
        is_flag=True,
        help="Think times uniform on [0, 2T] (same mean), so users do not march in step.",
    ),
    click.option(
        "--arrival",
        type=click.Choice(["poisson", "constant"]),
        default="poisson",
        show_default=True,
        help="Open loop: gaps between requests.",
    ),
)


def load_shape_options(command):
    """Add the load options (closed or open loop, shapes, think time) to a command."""
    for option in reversed(_LOAD_SHAPE):
        command = option(command)
    return command


def protocol_option(help_text: str) -> Callable[[FC], FC]:
    """``--protocol mlflow|v2``: the scoring endpoint a load test or a plan drives."""
    return click.option(
        "--protocol",
        type=click.Choice(["mlflow", "v2"]),
        default="mlflow",
        show_default=True,
        help=help_text,
    )
