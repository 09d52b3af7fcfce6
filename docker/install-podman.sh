#!/usr/bin/env bash
# Installs and configures podman where no container engine runs (Debian or Ubuntu,
# as root): podman, buildah, runc, and debootstrap for the Debian base image.
# Nothing is changed where docker or podman already runs a container.
#   sudo docker/install-podman.sh
# Settings, in a drop-in (/etc/containers/containers.conf.d/50-mlscale.conf)
# that leaves the system's own containers.conf alone:
# - runc as the runtime: crun fails on hosts whose cgroups are in hybrid mode;
# - default ulimits no higher than a container may raise them on such hosts.
set -euo pipefail

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    echo "install-podman: docker runs here; nothing to do" >&2; exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "install-podman: run as root (apt-get and /etc/containers)" >&2; exit 1
fi
need=()
for tool in podman buildah runc debootstrap; do
    command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
if [ ${#need[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || {
        echo "install-podman: no apt-get; install ${need[*]} with this system's package manager" >&2
        exit 1; }
    echo "install-podman: apt-get install podman buildah runc debootstrap (a minute or two)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        podman buildah runc debootstrap uidmap netavark aardvark-dns >/dev/null
fi
mkdir -p /etc/containers/containers.conf.d
conf=/etc/containers/containers.conf.d/50-mlscale.conf
if [ ! -f "$conf" ]; then
    cat > "$conf" <<'CONF'
# Written by mlscale's docker/install-podman.sh.
[containers]
default_ulimits = ["nofile=16384:16384", "nproc=8192:8192"]

[engine]
runtime = "runc"
CONF
fi
podman info --format 'install-podman: podman {{.Version.Version}}, runtime {{.Host.OCIRuntime.Name}}, cgroups {{.Host.CgroupsVersion}}' >&2
