"""Load any MLflow model URI, read its signature, and find a fast native path.

Choosing between the paths (checked on sample rows sent through the scoring
protocol) is ``mlscale.serving.loading.load_model``.
"""

from mlscale.model.loader import LoadedModel, download_model, load_pyfunc

# ``fetch_model`` lives in mlscale.model.fetch, which also runs as ``python -m``;
# importing it here would load it twice in that child process.
__all__ = ["LoadedModel", "download_model", "load_pyfunc"]
