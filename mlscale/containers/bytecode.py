"""Load the model as the server will, then compile the bytecode that took.

``PYTHONPYCACHEPREFIX=/opt/pycache python -m mlscale.containers.bytecode MODEL_DIR``
runs in a baked image's build stage (see ``bake.dockerfile``). The root file
system is read-only at run time, so whatever is not compiled here is compiled
again in memory at every start; compiling all of site-packages instead would
double its Python (about 100 MB for the example model), most of which serving
never imports. So the model is loaded exactly as ``mlscale serve`` loads it (the
native path's checks and the warm-up predictions included) and every module that
imported (the standard library's too) is compiled, with whole packages of the
server's own stack. A module first imported later (a rare request path) still
works: it is compiled in memory when it is.

The bytecode goes to the prefix (``sys.pycache_prefix``), not beside the
sources: the image keeps it in a layer of its own, apart from the venv's.

Loading here also proves, at build time, that the requirements suffice: a
model that does not load fails the build with mlscale's own message.
"""

from __future__ import annotations

import compileall
import importlib
import py_compile
import sys
import sysconfig
from pathlib import Path

#: Compiled whole: small, and the server imports parts of them only once serving.
WHOLE_PACKAGES = ("mlscale", "uvicorn", "uvloop", "httptools", "click", "h11", "anyio")
MARK = "mlscale-bytecode:"
_MODE = py_compile.PycInvalidationMode.UNCHECKED_HASH  # the image never changes


def main(argv: list[str]) -> int:
    sys.dont_write_bytecode = True  # only the compile below writes, in one mode
    (model_dir,) = argv
    if not sys.pycache_prefix:
        print(f"{MARK} ERROR: PYTHONPYCACHEPREFIX is not set: nowhere to put the bytecode")
        return 1
    # Imported here, not at the top: only once sys.dont_write_bytecode is set, so that
    # only the compile below writes bytecode (in its mode). The CLI first: what
    # `python -m mlscale serve` imports, so that its bytecode is written too. By name: this
    # build step loads the CLI's modules and never calls them, so it is no dependency of
    # the container layer on the CLI above it.
    importlib.import_module("mlscale.cli.main")
    from mlscale.errors import ModelLoadError
    from mlscale.serving.server import _uvicorn_config, build_app
    from mlscale.serving.settings import ServeSettings

    settings = ServeSettings(model_uri=model_dir, model_path=model_dir)
    try:
        app = build_app(settings)
    except ModelLoadError as exc:
        print(f"{MARK} ERROR: {exc}", flush=True)
        return 1
    _uvicorn_config(settings, app).load()  # the server's own lazy imports (loop, protocol)
    count = 0
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and path.endswith(".py") and Path(path).is_file():
            py_compile.compile(path, doraise=True, invalidation_mode=_MODE)
            count += 1
    site = Path(sysconfig.get_path("purelib"))
    for package in WHOLE_PACKAGES:
        if (site / package).is_dir():
            compileall.compile_dir(site / package, quiet=1, force=True, invalidation_mode=_MODE)
    print(f"{MARK} the model loads; compiled {count} imported modules and {', '.join(WHOLE_PACKAGES)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
