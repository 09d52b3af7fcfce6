# syntax=docker/dockerfile:1
# The MLflow tracking server and model registry, with the Postgres driver and
# the GCS and S3 clients. It does not contain mlscale.
# Build from the repository's root:
#   docker build -f docker/tracking.Dockerfile -t mlscale/tracking:0.1.0 .
#
# Pinned base image: see server.Dockerfile for pinning its digest too.

ARG BASE_IMAGE=python:3.11.7-slim-bookworm
FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
WORKDIR /src
COPY constraints.txt docker/tracking-requirements.txt ./
# The same MLflow, and the same versions of its dependencies, as mlscale's tests.
RUN --mount=type=secret,id=ca,target=/run/secrets/ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
    && /opt/venv/bin/pip install --no-compile -r tracking-requirements.txt -c constraints.txt \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib/python3.11/site-packages

FROM ${BASE_IMAGE}
RUN groupadd --system --gid 10001 mlflow \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
       --shell /usr/sbin/nologin mlflow
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    TMPDIR=/tmp
WORKDIR /tmp
USER 10001:10001
EXPOSE 5000
ENTRYPOINT ["mlflow", "server"]
CMD ["--host", "0.0.0.0", "--port", "5000"]
