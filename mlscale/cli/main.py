"""The ``mlscale`` command: the group, the one place errors become exit statuses, and
the commands registered on it (each in a module of its own)."""

from __future__ import annotations

import click

from mlscale import __version__
from mlscale.cli.build_image import build_image
from mlscale.cli.demo import demo
from mlscale.cli.images import images
from mlscale.cli.k8s import k8s
from mlscale.cli.loadtest import loadtest
from mlscale.cli.plan import plan
from mlscale.cli.serve import serve
from mlscale.cli.simulate import simulate
from mlscale.cli.stack import stack
from mlscale.cli.train import train
from mlscale.errors import MlscaleError


class _Group(click.Group):
    """Turns mlscale's own errors into their one-line message and exit status.

    The only place a command's expected failure becomes terminal output: commands
    raise ``MlscaleError`` subclasses and never catch one just to print it. Anything
    else is a bug and keeps its traceback.
    """

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MlscaleError as exc:
            error = click.ClickException(str(exc))
            # click declares exit_code on the class; its main reads this instance's.
            error.exit_code = exc.exit_code  # type: ignore[misc]
            raise error from exc


@click.group(cls=_Group, context_settings={"max_content_width": 100})
@click.version_option(__version__, prog_name="mlscale")
def main() -> None:
    """Serve MLflow models fast, load-test them, and size their Kubernetes deployment."""


for _command in (train, serve, loadtest, plan, demo, k8s, simulate, images, build_image, stack):
    main.add_command(_command)

if __name__ == "__main__":  # pragma: no cover
    main()
