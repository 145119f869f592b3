#!/usr/bin/env bash
# THE test command of Helios: `bash scripts/test-all.sh` (CI runs it via .ci/run).
#
# Steps, in order; the first failing step stops the run:
#   1. deps      scripts/install-test-deps.sh (idempotent; kosoku, chromium, npm ci, Redis, NATS)
#   2. fmt       cargo fmt --all -- --check
#   3. clippy    cargo clippy --workspace --all-targets -- -D warnings
#   4. test      cargo test --workspace
#   5. autobahn  scripts/autobahn.sh (RFC 6455 conformance, Autobahn cases via kosoku)
#   6. js        npm test in clients/js (Node and headless Chromium)
#   7. console   npm test in crates/helios-server/tests/console (headless Chromium)
#
# The last line printed is always the summary `N passed, M failed` (steps).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-$([ "${CI:-}" = true ] && echo never || echo auto)}

PASSED=0
FAILED=0
SKIPPED=()
RUN_START=$(date +%s)

banner() { printf '\n==> [%s] %s\n' "$1" "$2"; }

summary() {
    local total=$(($(date +%s) - RUN_START))
    if [ ${#SKIPPED[@]} -gt 0 ]; then
        printf 'skipped: %s\n' "${SKIPPED[*]}"
    fi
    printf 'total time: %ss\n' "$total"
    printf '%d passed, %d failed\n' "$PASSED" "$FAILED"
}

# step NAME COMMAND... : run one step; exit 77 from the command means "skipped".
step() {
    local name=$1
    shift
    banner "$name" "$*"
    local start rc
    start=$(date +%s)
    "$@"
    rc=$?
    local secs=$(($(date +%s) - start))
    if [ "$rc" -eq 0 ]; then
        PASSED=$((PASSED + 1))
        printf '<== [%s] ok (%ss)\n' "$name" "$secs"
    elif [ "$rc" -eq 77 ]; then
        SKIPPED+=("$name")
        printf '<== [%s] SKIPPED (%ss)\n' "$name" "$secs"
    else
        FAILED=$((FAILED + 1))
        printf '\nFAILED: step "%s" (%s) exited with status %d after %ss\n' "$name" "$*" "$rc" "$secs" >&2
        summary
        exit 1
    fi
}

step deps bash scripts/install-test-deps.sh
step fmt cargo fmt --all -- --check
step clippy cargo clippy --workspace --all-targets -- -D warnings
step test cargo test --workspace
step autobahn bash scripts/autobahn.sh
if [ -f clients/js/package.json ]; then
    step js bash -c 'cd clients/js && npm test'
fi
step console bash -c 'cd crates/helios-server/tests/console && npm test'

summary
