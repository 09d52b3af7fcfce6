"""``python -m mlscale``: the ``mlscale`` command (as the images' entrypoint runs it)."""

from mlscale.cli.main import main

main()
