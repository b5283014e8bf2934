#!/usr/bin/env bash
# Step 4: the Argo CD Application and the pipeline's ServiceAccount/RBAC
# (k3d/argocd/application.yaml). Idempotent: `kubectl apply`.
# COELHO_ARGOCD_REPO_URL, when set, replaces the Application's repoURL (the
# deploy repository as the cluster reaches it).
set -euo pipefail
here=${BASH_SOURCE[0]%/*}
[ "$here" != "${BASH_SOURCE[0]}" ] || here=.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"
require_tools kubectl
require_context

kc get crd applications.argoproj.io >/dev/null 2>&1 \
    || die "Argo CD's Application CRD is missing; run scripts/setup/02-install-argocd.sh first"

manifest="$repo_root/k3d/argocd/application.yaml"
kc apply -f "$manifest"

repo_url=${COELHO_ARGOCD_REPO_URL:-}
if [ -n "$repo_url" ]; then
    case $repo_url in
        *[\"\\[:space:]]* | *@*) die "COELHO_ARGOCD_REPO_URL must be a plain URL without credentials, quotes or spaces" ;;
    esac
    kc -n "$argocd_namespace" patch application coelho-realtime --type merge \
        -p "{\"spec\":{\"source\":{\"repoURL\":\"$repo_url\"}}}" >/dev/null
    say "Application repoURL set to $repo_url"
fi

say "Application applied. Status: kubectl -n $argocd_namespace get application coelho-realtime"
say "pipeline token (1 day): kubectl -n $argocd_namespace create token coelho-pipeline --duration=24h"
