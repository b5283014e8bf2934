#!/usr/bin/env bash
# Step 2: Argo CD in namespace argocd, from the argo-cd Helm chart (pinned).
# Idempotent: `helm upgrade --install` converges to the same release.
set -euo pipefail
here=${BASH_SOURCE[0]%/*}
[ "$here" != "${BASH_SOURCE[0]}" ] || here=.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"
require_tools kubectl helm
require_context

chart_version=${ARGOCD_CHART_VERSION:-10.1.1}
say "installing Argo CD (chart argo-cd $chart_version) into namespace '$argocd_namespace'"
helm upgrade --install argocd argo-cd \
    --repo https://argoproj.github.io/argo-helm \
    --version "$chart_version" \
    --kube-context "$kube_context" \
    --namespace "$argocd_namespace" --create-namespace \
    --set dex.enabled=false \
    --wait --timeout 10m

kc -n "$argocd_namespace" rollout status deployment/argocd-server --timeout=300s
kc get crd applications.argoproj.io >/dev/null
say "Argo CD is up. UI: kubectl -n $argocd_namespace port-forward svc/argocd-server 8080:443"
say "admin password: kubectl -n $argocd_namespace get secret argocd-initial-admin-secret -o jsonpath='{.data.password}' | base64 -d"
