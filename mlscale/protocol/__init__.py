"""The MLflow scoring protocol: decode requests, encode predictions, error JSON."""
