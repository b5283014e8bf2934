#!/usr/bin/env bash
# Step 1: the k3d cluster "coelho-realtime" with its registry (k3d/cluster.yaml).
# Idempotent: an existing cluster is started if stopped, never recreated.
set -euo pipefail
here=${BASH_SOURCE[0]%/*}
[ "$here" != "${BASH_SOURCE[0]}" ] || here=.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"
require_tools docker k3d kubectl

docker info >/dev/null 2>&1 \
    || die "no Docker engine answers (DOCKER_HOST=${DOCKER_HOST:-unset}); start it and retry"

config="$repo_root/k3d/cluster.yaml"
if k3d cluster get "$cluster_name" >/dev/null 2>&1; then
    say "cluster '$cluster_name' exists; starting it if it is stopped"
    k3d cluster start "$cluster_name" --wait
else
    say "creating cluster '$cluster_name' from ${config#"$repo_root"/}"
    k3d cluster create --config "$config"
fi

kubectl config use-context "$kube_context" >/dev/null
kc wait --for=condition=Ready nodes --all --timeout=180s
say "cluster ready: kube context '$kube_context', registry 127.0.0.1:5000"
