#!/usr/bin/env bash
# Step 3: the Secrets the chart reads (k3d/helm/values.yaml, `secrets:`), with
# random passwords. Idempotent: an existing Secret is kept as it is, because
# MinIO, PostgreSQL and Grafana store the password they first started with.
# No password is printed or passed on a command line.
set -euo pipefail
here=${BASH_SOURCE[0]%/*}
[ "$here" != "${BASH_SOURCE[0]}" ] || here=.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"
require_tools kubectl od tr mktemp
require_context

if ! kc get namespace "$app_namespace" >/dev/null 2>&1; then
    kc create namespace "$app_namespace" >/dev/null
    say "created namespace '$app_namespace'"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 700 "$work"

random_secret() {
    # 24 random bytes as 48 hex characters: safe inside URLs (REDIS_URL) and configs.
    od -An -N24 -tx1 /dev/urandom | tr -d ' \n'
}

# create_secret NAME KEY=VALUE...: creates Secret NAME unless it exists.
create_secret() {
    local name=$1 pair key args=()
    shift
    if kc -n "$app_namespace" get secret "$name" >/dev/null 2>&1; then
        say "secret '$name' exists; kept"
        return 0
    fi
    mkdir "$work/$name"
    for pair in "$@"; do
        key=${pair%%=*}
        printf '%s' "${pair#*=}" >"$work/$name/$key"
        args+=("--from-file=$key=$work/$name/$key")
    done
    kc -n "$app_namespace" create secret generic "$name" "${args[@]}" >/dev/null
    kc -n "$app_namespace" label secret "$name" app.kubernetes.io/part-of=coelho-realtime >/dev/null
    say "secret '$name' created (keys: $(for pair in "$@"; do printf '%s ' "${pair%%=*}"; done))"
}

create_secret coelho-realtime-minio \
    root-user=coelho-admin \
    "root-password=$(random_secret)"
create_secret coelho-realtime-postgresql \
    "postgres-password=$(random_secret)" \
    "password=$(random_secret)"
create_secret coelho-realtime-redis \
    "redis-password=$(random_secret)"
create_secret coelho-realtime-grafana \
    admin-user=admin \
    "admin-password=$(random_secret)"

say "read one with: kubectl -n $app_namespace get secret coelho-realtime-grafana -o jsonpath='{.data.admin-password}' | base64 -d"
