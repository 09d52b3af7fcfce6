"""Load any MLflow model URI, read its signature, and find a fast native path."""

from mlscale.model.loader import LoadedModel, download_model, load_model

__all__ = ["LoadedModel", "download_model", "load_model"]
