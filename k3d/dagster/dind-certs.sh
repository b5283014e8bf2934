#!/usr/bin/env bash
# Makes the TLS certificates between the run pods and the docker-in-docker engine
# (k3d/dagster/dind.yaml) and stores them as two Secrets in namespace dagster:
#   dind-server-tls  ca.pem cert.pem key.pem   the engine's, for the Service's DNS names
#   dind-client-tls  ca.pem cert.pem key.pem   the run pods' (DOCKER_CERT_PATH)
# A fresh CA signs both; its key is thrown away with the temporary directory, so no third
# certificate can ever be signed. Existing Secrets are kept (delete both to rotate, then
# `kubectl -n dagster rollout restart deployment/dind`). Keys are never printed.
set -euo pipefail
# shellcheck source=scripts/setup/lib.sh
. "$(cd "${BASH_SOURCE[0]%/*}/../../scripts/setup" && pwd)/lib.sh"
require_tools kubectl openssl mktemp
require_context

namespace=dagster
service=dind
days=${DIND_CERT_DAYS:-825}

has() { kubectl --context "$kube_context" -n "$namespace" get secret "$1" >/dev/null 2>&1; }
if has dind-server-tls && has dind-client-tls; then
    say "Secrets dind-server-tls and dind-client-tls exist; kept"
    exit 0
elif has dind-server-tls || has dind-client-tls; then
    die "only one of the Secrets dind-server-tls and dind-client-tls exists; both must come from one CA: \
kubectl -n $namespace delete secret dind-server-tls dind-client-tls --ignore-not-found, then run this again"
fi

umask 077
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

key "$dir/ca-key.pem"
openssl req -x509 -new -key "$dir/ca-key.pem" -sha256 -days "$days" -subj "/CN=coelho-pipeline dind CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$dir/ca.pem"

# sign NAME SUBJECT EXTENSIONS: NAME-key.pem and NAME-cert.pem, signed by the CA.
sign() {
    key "$dir/$1-key.pem"
    openssl req -new -key "$dir/$1-key.pem" -subj "$2" -out "$dir/$1.csr"
    printf '%s\n' "$3" >"$dir/$1.ext"
    openssl x509 -req -in "$dir/$1.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" -CAcreateserial \
        -sha256 -days "$days" -extfile "$dir/$1.ext" -out "$dir/$1-cert.pem" 2>/dev/null
}

svc="$service.$namespace.svc"
sign server "/CN=$service" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:$service,DNS:$service.$namespace,DNS:$svc,DNS:$svc.cluster.local"
sign client "/CN=coelho-pipeline" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"

for side in server client; do
    kubectl --context "$kube_context" -n "$namespace" create secret generic "dind-$side-tls" \
        --from-file=ca.pem="$dir/ca.pem" --from-file=cert.pem="$dir/$side-cert.pem" \
        --from-file=key.pem="$dir/$side-key.pem" >/dev/null
    say "created Secret $namespace/dind-$side-tls"
done
