#!/usr/bin/env bash
# Builds the local base images the app Dockerfiles use when Docker Hub is out of reach:
#   coelho-base/debian:bookworm   debootstrap minbase, imported
#   coelho-base/python:3.11-slim  Debian's Python 3.11 (for python:3.11-slim)
#   coelho-base/node:18-slim      Debian's Node.js 18 + npm (for node:18-slim)
# Idempotent: an image that already exists is kept. Talks to the engine in DOCKER_HOST.
set -euo pipefail

prefix=${COELHO_BASE_PREFIX:-coelho-base}
cache=${COELHO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/coelho-pipeline}
here=$(cd "$(dirname "$0")" && pwd)

need() { command -v "$1" >/dev/null 2>&1 || { echo "base-images: '$1' is required but not installed ($2)" >&2; exit 1; }; }
need docker "apt-get install docker.io"
need debootstrap "apt-get install debootstrap"
docker info >/dev/null 2>&1 || { echo "base-images: no Docker engine answers at ${DOCKER_HOST:-the default socket}" >&2; exit 1; }

have() { docker image inspect "$1" >/dev/null 2>&1; }

if ! have "$prefix/debian:bookworm"; then
    rootfs="$cache/rootfs-bookworm"
    if [ ! -x "$rootfs/bin/bash" ]; then
        # The mirror is read from apt's own configuration so the image uses what this machine may reach.
        mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
        mirror=${mirror:-http://deb.debian.org/debian}
        rm -rf "$rootfs.partial" && mkdir -p "$cache"
        debootstrap --variant=minbase bookworm "$rootfs.partial" "$mirror" >"$cache/debootstrap.log" 2>&1 \
            || { echo "base-images: debootstrap failed, see $cache/debootstrap.log" >&2; exit 1; }
        rm -rf "$rootfs" && mv "$rootfs.partial" "$rootfs"
    fi
    tar -C "$rootfs" -c \
        --exclude='./var/cache/apt/archives/*.deb' --exclude='./var/lib/apt/lists/*' \
        --exclude='./usr/share/doc/*' --exclude='./usr/share/man/*' --exclude='./usr/share/locale/*' \
        . | docker import -c 'CMD ["bash"]' - "$prefix/debian:bookworm" >/dev/null
    echo "base-images: imported $prefix/debian:bookworm"
fi

for spec in python:3.11-slim node:18-slim; do
    name=${spec%%:*}
    if ! have "$prefix/$spec"; then
        docker build -q --network=host --build-arg "DEBIAN_BASE=$prefix/debian:bookworm" \
            -t "$prefix/$spec" -f "$here/base-images/$name.Dockerfile" "$here/base-images" >/dev/null
        echo "base-images: built $prefix/$spec"
    fi
done
