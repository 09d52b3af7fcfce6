# syntax=docker/dockerfile:1
# The load generator: Locust on the locustfile mlscale ships, as master or worker.
# Build from the repository's root:
#   docker build -f docker/locust.Dockerfile -t mlscale/locust:0.1.0 .
# Run (the manifests in deploy/ do the same):
#   docker run --rm -p 8089:8089 -e TARGET_HOST=http://host:8080 mlscale/locust:0.1.0 --master
#   docker run --rm mlscale/locust:0.1.0 --worker --master-host MASTER
# With MLSCALE_LOADTEST_CONFIG unset or empty, the locustfile runs the
# reference scenario's user (one wine row per request, 1 s think time)
# against TARGET_HOST.
#
# Pinned base image: see server.Dockerfile for pinning its digest too.

ARG BASE_IMAGE=python:3.11.7-slim-bookworm
FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml constraints.txt README.md LICENSE ./
COPY mlscale ./mlscale
RUN --mount=type=secret,id=ca,target=/run/secrets/ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
    && /opt/venv/bin/pip install --no-compile -c constraints.txt . \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib/python3.11/site-packages
# The manifests run `locust -f` on this path (mlscale.k8s.LOCUSTFILE_IN_IMAGE):
# fail the build, not the pods, if it ever moves.
RUN test -f /opt/venv/lib/python3.11/site-packages/mlscale/loadtest/locustfile.py

FROM ${BASE_IMAGE}
RUN groupadd --system --gid 10001 mlscale \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
       --shell /usr/sbin/nologin mlscale
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    MLSCALE_LOADTEST_CONFIG=""
USER 10001:10001
# 8089: the web UI and its HTTP API; 5557: workers connect to the master.
EXPOSE 8089 5557
ENTRYPOINT ["locust", "-f", "/opt/venv/lib/python3.11/site-packages/mlscale/loadtest/locustfile.py"]
