#!/usr/bin/env bash
# The whole bring-up, in order: cluster, Argo CD, Secrets, Application.
# Every step is idempotent, so this can be re-run after a failure.
set -euo pipefail
here=${BASH_SOURCE[0]%/*}
[ "$here" != "${BASH_SOURCE[0]}" ] || here=.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"
require_tools docker k3d kubectl helm od tr mktemp

"$setup_dir/01-create-cluster.sh"
"$setup_dir/02-install-argocd.sh"
"$setup_dir/03-create-secrets.sh"
"$setup_dir/04-apply-application.sh"
say "done. See k3d/README.md for what to do next."
