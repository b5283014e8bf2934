# Shared by scripts/up and scripts/test: system packages and the project's virtualenv.
# shellcheck shell=bash

install_system_packages() {
    local missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    command -v git >/dev/null 2>&1 || missing+=(git)
    python3 -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
    local extra
    for extra in "$@"; do
        command -v "${extra%%=*}" >/dev/null 2>&1 || missing+=("${extra#*=}")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "installing ${missing[*]}" >&2
        if [ "$(id -u)" -ne 0 ]; then
            echo "these Debian packages are missing and installing them needs root: ${missing[*]}" >&2
            return 1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        # The docker.io package must not start its own dockerd: the scripts start one bound to loopback.
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

ensure_venv() {
    local root=$1 extras=$2
    # A venv made without ensurepip has a python but no pip: start over then.
    if [ ! -x "$root/.venv/bin/pip" ]; then
        rm -rf "$root/.venv"
        python3 -m venv "$root/.venv"
    fi
    "$root/.venv/bin/pip" install -q --disable-pip-version-check -e "${root}[${extras}]"
}
