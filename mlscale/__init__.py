"""mlscale: serve MLflow models fast, load-test them, size their Kubernetes deployment."""

__version__ = "0.1.0"
