# Shared by the scripts in scripts/setup/: messages, tool checks, paths.
# Source it first thing; it uses only shell builtins, so a missing tool is
# reported before anything else runs.
# shellcheck shell=bash

# The script's name for messages, and the repository root.
setup_dir=${BASH_SOURCE[0]%/*}
[ "$setup_dir" != "${BASH_SOURCE[0]}" ] || setup_dir=.
setup_name=${0##*/}
repo_root=$(cd "$setup_dir/../.." && pwd)
export repo_root

# Names shared by every step. They match k3d/cluster.yaml, k3d/helm/values.yaml
# and k3d/argocd/application.yaml.
cluster_name=coelho-realtime
kube_context=${COELHO_KUBE_CONTEXT:-k3d-$cluster_name}
app_namespace=coelho-realtime
argocd_namespace=argocd
export cluster_name kube_context app_namespace argocd_namespace

say() {
    printf '%s: %s\n' "$setup_name" "$*"
}

die() {
    printf '%s: error: %s\n' "$setup_name" "$*" >&2
    exit 1
}

install_hint() {
    case $1 in
        k3d) echo "install k3d v5: https://k3d.io/stable/#installation" ;;
        kubectl) echo "install kubectl: https://kubernetes.io/docs/tasks/tools/" ;;
        helm) echo "install Helm 3.8 or later: https://helm.sh/docs/intro/install/" ;;
        docker) echo "install Docker: https://docs.docker.com/engine/install/ (Debian: apt-get install docker.io)" ;;
        od | tr | mktemp) echo "it is part of GNU coreutils (apt-get install coreutils)" ;;
        *) echo "install it and retry" ;;
    esac
}

# require_tools TOOL...: exits 127 naming every TOOL that is not on PATH.
require_tools() {
    local tool missing=0
    for tool in "$@"; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            printf "%s: error: '%s' is required but was not found in PATH; %s\n" \
                "$setup_name" "$tool" "$(install_hint "$tool")" >&2
            missing=1
        fi
    done
    if [ "$missing" -ne 0 ]; then
        exit 127
    fi
}

# require_context: the k3d cluster's kube context must exist (01 creates it).
require_context() {
    kubectl config get-contexts "$kube_context" >/dev/null 2>&1 \
        || die "kube context '$kube_context' not found; run scripts/setup/01-create-cluster.sh first (or set COELHO_KUBE_CONTEXT)"
}

kc() {
    kubectl --context "$kube_context" "$@"
}
