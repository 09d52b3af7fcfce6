# syntax=docker/dockerfile:1
# Postgres for the tracking server, where the official postgres:16.4-bookworm
# that the manifests name cannot be pulled (`mlscale images build postgres`
# builds this only then, and tags it mlscale/postgres:VERSION either way).
# Debian bookworm's own PostgreSQL (15) on the same Debian base as the other
# images, with an entrypoint that honours the official image's variables:
# POSTGRES_USER, POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE), POSTGRES_DB,
# PGDATA, POSTGRES_INITDB_ARGS and POSTGRES_HOST_AUTH_METHOD (default
# scram-sha-256). It runs as uid 999, the official image's `postgres` user,
# which the manifests' runAsUser names. No password is in any layer: it comes
# from the environment (a Secret) when a container first starts on an empty
# PGDATA.
# Build from the repository's root:
#   docker build --build-arg BASE_IMAGE=$(docker/debian-base.sh) \
#     -f docker/postgres.Dockerfile -t mlscale/postgres:0.1.0 .

ARG BASE_IMAGE=python:3.11.7-slim-bookworm
FROM ${BASE_IMAGE}
# The official image's uid and gid, made before the package makes its own user;
# and no cluster made at install time (the entrypoint makes one in PGDATA).
RUN groupadd --system --gid 999 postgres \
    && useradd --system --uid 999 --gid 999 --home-dir /var/lib/postgresql \
       --shell /bin/bash postgres \
    && mkdir -p /etc/postgresql-common \
    && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.conf \
    && printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d /usr/share/doc/* /usr/share/man/* \
    && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
    && chown -R 999:999 /var/lib/postgresql /var/run/postgresql \
    && chmod 2775 /var/run/postgresql
COPY docker/postgres/entrypoint.sh /usr/local/bin/docker-entrypoint.sh
# Postgres's own binaries (initdb, pg_ctl, pg_isready) ahead of Debian's wrappers.
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data \
    LANG=C.UTF-8
USER 999:999
EXPOSE 5432
# A "fast" shutdown: roll back open transactions and stop, as the official image does.
STOPSIGNAL SIGINT
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
