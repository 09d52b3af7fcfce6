"""Kubernetes manifests: render a kustomize overlay from a plan, and validate one.

The manifests themselves are plain YAML that a Kubernetes user reads, in the
repository's ``deploy/`` folder (a kustomize base and overlays). This package
only writes small patches on top of them (:mod:`mlscale.k8s.render`) and checks
what ``kubectl kustomize`` makes of a folder (:mod:`mlscale.k8s.validate`).
"""

# Where the Locust image keeps mlscale's locustfile: the site-packages of the
# image's virtual environment (docker/locust.Dockerfile installs mlscale into
# /opt/venv with Python 3.11, and checks that this file exists). The manifests
# run ``locust -f`` on this path; a policy check holds them to it.
LOCUSTFILE_IN_IMAGE = "/opt/venv/lib/python3.11/site-packages/mlscale/loadtest/locustfile.py"

# The names of the objects in deploy/base that a plan sizes.
SERVER = "mlscale-server"
SERVER_CONTAINER = "server"
LOCUST_WORKER = "locust-worker"
LOCUST_CONTAINER = "locust"
