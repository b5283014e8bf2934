#!/usr/bin/env bash
# Runs the apps' own test suites, each with its own dependency set:
#   apps/fastapi, apps/kafka_producers  pytest, in a venv per app built from the app's hash-pinned
#                                       requirements.lock + requirements-test.lock
#   apps/sveltekit                      Vitest, after `npm ci` from the committed package-lock.json
# Venvs live in ${COELHO_CACHE_DIR:-$HOME/.cache/coelho-pipeline}/venvs/<app> and are rebuilt when
# a lock file changes. Exits non-zero if any suite fails or collects no test.
# Usage: scripts/test-apps.sh [fastapi] [kafka_producers] [sveltekit]   (default: all three)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${COELHO_CACHE_DIR:-${HOME}/.cache/coelho-pipeline}
python=${PYTHON:-python3}
apps=("$@")
[ ${#apps[@]} -gt 0 ] || apps=(fastapi kafka_producers sveltekit)

log() { printf 'test-apps: %s\n' "$*" >&2; }

python_venv() {  # python_venv APP -> path of a venv whose deps match the app's locks
    local app=$1 dir=$root/apps/$1 venv=$cache/venvs/$1 stamp
    stamp=$({ "$python" -c 'import sys; print(sys.version)'; cat "$dir/requirements.lock" "$dir/requirements-test.lock"; } \
        | sha256sum | cut -d' ' -f1)
    if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.locks-sha256" 2>/dev/null)" != "$stamp" ]; then
        log "$app: building venv $venv"
        rm -rf "$venv"
        mkdir -p "$(dirname "$venv")"
        "$python" -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes \
            -r "$dir/requirements.lock" -r "$dir/requirements-test.lock" >&2
        printf '%s\n' "$stamp" >"$venv/.locks-sha256"
    fi
    printf '%s\n' "$venv"
}

run_python_app() {
    local app=$1 venv rc=0
    venv=$(python_venv "$app")
    (cd "$root/apps/$app" && "$venv/bin/python" -m pytest -p no:cacheprovider -q) || rc=$?
    # pytest's exit code 5 means no test was collected: that is a failure here too.
    [ "$rc" -ne 5 ] || log "$app: no tests were collected"
    return "$rc"
}

run_node_app() {
    local app=$1
    command -v npm >/dev/null 2>&1 || { log "$app: npm is required"; return 1; }
    # Vitest itself fails when it finds no test file or a file without tests.
    (cd "$root/apps/$app" && npm ci --no-audit --no-fund --loglevel=warn && npx --no-install vitest run)
}

failed=()
for app in "${apps[@]}"; do
    log "=== $app"
    case $app in
        fastapi | kafka_producers) run_python_app "$app" || failed+=("$app") ;;
        sveltekit) run_node_app "$app" || failed+=("$app") ;;
        *) log "unknown app: $app"; failed+=("$app") ;;
    esac
done

if [ ${#failed[@]} -gt 0 ]; then
    log "FAILED: ${failed[*]}"
    exit 1
fi
log "all app suites passed (${apps[*]})"
