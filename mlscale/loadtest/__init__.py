"""Load tests with Locust: request bodies, load shapes, exact latency histograms.

Locust always runs as a subprocess on ``mlscale/loadtest/locustfile.py``;
nothing else in mlscale imports locust (importing it monkey-patches the
standard library through gevent).
"""

# Shared by the locustfile (in Locust's processes) and the runner (in mlscale's).
CONFIG_ENV = "MLSCALE_LOADTEST_CONFIG"  # names the JSON configuration file
PROGRESS_PREFIX = "MLSCALE_PROGRESS "  # starts the master's one-line-a-second reports
RESULTS_FILE = "locust_results.json"  # the merged results the master writes
