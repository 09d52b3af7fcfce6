"""Capacity at a latency SLA: the search, the fitted models, the sizing. Pure functions."""
