"""Load tests with Locust: request bodies, load shapes, exact latency histograms.

Locust always runs as a subprocess on ``mlscale/loadtest/locustfile.py``;
nothing else in mlscale imports locust (importing it monkey-patches the
standard library through gevent).
"""
