#!/usr/bin/env bash
# A stand-in for the pinned python:3.11.7-slim-bookworm base, built from Debian's
# archive, for machines that can reach Debian's mirror but no image registry.
# The Dockerfiles take it through their BASE_IMAGE build argument, unchanged:
#   mlscale/containers/debian-base.sh          # prints the image it built or found
#   podman build --build-arg BASE_IMAGE=$(docker/debian-base.sh) -f docker/server.Dockerfile .
# Needs root (debootstrap), debootstrap, and docker or podman
# (MLSCALE_CONTAINER_ENGINE picks). Debian bookworm's python3 is 3.11.2.
# The image is tagged with a hash of this script, so a second run reuses it.
set -euo pipefail

engine=${MLSCALE_CONTAINER_ENGINE:-}
if [ -z "$engine" ]; then
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then engine=docker
    elif command -v podman >/dev/null 2>&1; then engine=podman
    else echo "debian-base: no container engine (install podman or docker)" >&2; exit 1
    fi
fi
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
hash=$(sha256sum "$0" | cut -c1-12)
tag=${1:-localhost/mlscale/python-base:bookworm-$hash}

if "$engine" image inspect "$tag" >/dev/null 2>&1; then
    echo "$tag"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "debian-base: debootstrap needs root; run as root or with sudo" >&2; exit 1
fi
command -v debootstrap >/dev/null || {
    echo "debian-base: debootstrap is not installed (Debian/Ubuntu: apt-get install debootstrap)" >&2
    exit 1
}

root=$(mktemp -d /var/tmp/mlscale-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "debian-base: debootstrap bookworm into $root (about a minute)" >&2
# passwd: the Dockerfiles add their non-root user with groupadd/useradd.
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,passwd \
    bookworm "$root/rootfs" "$mirror" > "$root/debootstrap.log" 2>&1 || {
    tail -20 "$root/debootstrap.log" >&2; exit 1; }
# What a slim image leaves out: downloaded packages and their lists, docs,
# manuals and translations (about half of the tree).
rm -rf "$root"/rootfs/var/cache/apt/archives/*.deb "$root"/rootfs/var/lib/apt/lists/* \
       "$root"/rootfs/usr/share/doc/* "$root"/rootfs/usr/share/man/* \
       "$root"/rootfs/usr/share/info/* "$root"/rootfs/var/log/*.log
find "$root/rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} +
# The official image's `python` command, beside Debian's python3.
ln -sf python3 "$root/rootfs/usr/bin/python"
tar -C "$root/rootfs" -c . | "$engine" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$tag" >/dev/null
echo "$tag"
