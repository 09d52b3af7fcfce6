"""The scoring server: ASGI app, batching, metrics, workers and lifecycle."""
