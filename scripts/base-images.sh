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

# The machine's own extra CA certificates (e.g. a TLS-intercepting proxy in front of PyPI and npm)
# are trusted in the bases, so pip and npm inside app builds reach their registries here too.
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
mkdir "$context/certs"
cp "$here"/base-images/*.Dockerfile "$context/"
for crt in /usr/local/share/ca-certificates/*.crt; do
    [ -e "$crt" ] && cp "$crt" "$context/certs/"
done
# The label changes whenever the recipe or the certificates do, so a stale base is rebuilt.
recipe=$(cat "$context"/*.Dockerfile "$context"/certs/* 2>/dev/null | sha256sum | cut -c1-16)

for spec in python:3.11-slim node:18-slim; do
    name=${spec%%:*}
    current=$(docker image inspect -f '{{ index .Config.Labels "coelho.base.recipe" }}' "$prefix/$spec" 2>/dev/null || true)
    if [ "$current" != "$recipe" ]; then
        docker build -q --network=host --build-arg "DEBIAN_BASE=$prefix/debian:bookworm" \
            --label "coelho.base.recipe=$recipe" \
            -t "$prefix/$spec" -f "$context/$name.Dockerfile" "$context" >/dev/null
        echo "base-images: built $prefix/$spec"
    fi
done
