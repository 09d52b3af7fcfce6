# syntax=docker/dockerfile:1
# The model server: `mlscale serve`, non-root, for a read-only root file system.
# Build from the repository's root (the context is cut down by .dockerignore):
#   docker build -f docker/server.Dockerfile -t mlscale/server:0.1.0 .
# Run locally:
#   docker run --rm -p 8080:8080 -e MLFLOW_TRACKING_URI=http://host:5000 \
#     mlscale/server:0.1.0 -m models:/wine-quality/1
#
# The base image is pinned by version, the Python of constraints.txt. For a
# production build pin its digest as well: FROM python:3.11.7-slim-bookworm@sha256:...
# (docker buildx imagetools inspect python:3.11.7-slim-bookworm prints it).

ARG BASE_IMAGE=python:3.11.7-slim-bookworm
FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml constraints.txt README.md LICENSE docker/server-requirements.txt ./
COPY mlscale ./mlscale
# Only what serving needs (server-requirements.txt: no Locust, plotly or the
# planner's libraries), then the package itself without its other dependencies.
# Not editable: the image holds the package, not the source tree. The
# constraints pin every dependency to the versions the tests ran with.
RUN --mount=type=secret,id=ca,target=/run/secrets/ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
    && /opt/venv/bin/pip install --no-compile -r server-requirements.txt -c constraints.txt \
    && /opt/venv/bin/pip install --no-compile --no-deps -c constraints.txt . \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib/python3.11/site-packages

FROM ${BASE_IMAGE}
# The uid and gid the manifests run as (runAsUser: 10001); no home, no shell.
RUN groupadd --system --gid 10001 mlscale \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
       --shell /usr/sbin/nologin mlscale
COPY --from=build /opt/venv /opt/venv
# Bytecode is compiled at build time: the root file system is read-only at run
# time, and HOME and TMPDIR point at the writable /tmp (an emptyDir).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    TMPDIR=/tmp
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["mlscale", "serve", "-h", "0.0.0.0", "-p", "8080"]
