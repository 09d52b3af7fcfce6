"""Kubernetes manifests: render a kustomize overlay or KServe objects from a plan, and validate them.

The manifests themselves are plain YAML that a Kubernetes user reads, in the
repository's ``deploy/`` folder (a kustomize base and overlays). This package
writes small patches on top of them (:mod:`mlscale.k8s.render`), the objects
that scale the server on requests in flight (:mod:`mlscale.k8s.inflight`: KEDA
or prometheus-adapter), a KServe ServingRuntime and InferenceService
(:mod:`mlscale.k8s.kserve`), and checks what ``kubectl kustomize`` makes of a
folder (:mod:`mlscale.k8s.validate`; KEDA's and KServe's kinds by
:mod:`mlscale.k8s.crds`).
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
