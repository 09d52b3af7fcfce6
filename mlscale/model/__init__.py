"""Load any MLflow model URI, read its signature, and find a fast native path."""

from mlscale.model.fetch import fetch_model
from mlscale.model.loader import LoadedModel, download_model, load_model

__all__ = ["LoadedModel", "download_model", "fetch_model", "load_model"]
