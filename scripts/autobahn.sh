#!/usr/bin/env bash
# RFC 6455 conformance: run the Autobahn TestSuite cases (via kosoku) against
# Helios' WebSocket layer.
#
# Builds and starts `cargo run --release -p helios --example autobahn_echo --
# 127.0.0.1:PORT` (an echo server on a free loopback port), waits for the port,
# runs kosoku in fuzzingclient mode over cases 1-7, 9 and 10 (12/13 are
# permessage-deflate, which Helios does not negotiate), then checks every
# case in the report's index.json:
#   behavior      must be OK, NON-STRICT or INFORMATIONAL
#   behaviorClose must be OK or INFORMATIONAL
# It prints a table of counts per case group and every failing case, and exits
# non-zero if any case fails. The server is always killed on exit.
#
# Report (HTML + JSON): target/autobahn/report/index.html, index.json
# Logs:                 target/autobahn/server.log, target/autobahn/kosoku.log
#
# Environment knobs:
#   AUTOBAHN_CASES     space-separated case globs (default: "1.* 2.* 3.* 4.* 5.* 6.* 7.* 9.* 10.*")
#   AUTOBAHN_ADDR      host:port of an already running server: skip build/start
#   AUTOBAHN_PORT      loopback port for the example (default: a free one)
#   AUTOBAHN_TIMEOUT   seconds allowed for the kosoku run (default 1800; a failing case
#                      costs kosoku a few seconds of timeout, a passing one ~30 ms)
#   AUTOBAHN_PARALLEL  kosoku -p, cases run in parallel (default 1)
#
# Exit codes: 0 all cases acceptable, 1 failure (a missing example is a
# failure too: conformance is not optional).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

CASES=${AUTOBAHN_CASES:-"1.* 2.* 3.* 4.* 5.* 6.* 7.* 9.* 10.*"}
OUT_BASE="$ROOT/target/autobahn"
REPORT="$OUT_BASE/report"
TIMEOUT=${AUTOBAHN_TIMEOUT:-1800}
PARALLEL=${AUTOBAHN_PARALLEL:-1}
EXAMPLE_SRC="crates/helios/examples/autobahn_echo.rs"

log() { printf '[autobahn] %s\n' "$*"; }
die() { printf '[autobahn] ERROR: %s\n' "$*" >&2; exit 1; }

mkdir -p "$OUT_BASE"

# --- kosoku -----------------------------------------------------------------
if command -v kosoku >/dev/null 2>&1; then
    KOSOKU=(kosoku)
elif python3 -c 'import kosoku' 2>/dev/null; then
    KOSOKU=(python3 -c 'import sys; sys.argv[0] = "kosoku"; from kosoku._cli import main; main()')
else
    die "kosoku is not installed: run scripts/install-test-deps.sh"
fi

# --- server under test --------------------------------------------------------
SERVER_PID=""
KOSOKU_PID=""
cleanup() {
    local rc=$?
    if [ -n "$KOSOKU_PID" ]; then
        kill -TERM "$KOSOKU_PID" 2>/dev/null || true # timeout(1) passes it on to kosoku
        wait "$KOSOKU_PID" 2>/dev/null || true
    fi
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        # The server runs in its own process group (setsid): end the group.
        kill -TERM -- "-$SERVER_PID" 2>/dev/null || kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL -- "-$SERVER_PID" 2>/dev/null || kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

if [ -n "${AUTOBAHN_ADDR:-}" ]; then
    ADDR=$AUTOBAHN_ADDR
    log "testing the already running server at $ADDR"
else
    if [ ! -f "$EXAMPLE_SRC" ]; then
        log "ERROR: $EXAMPLE_SRC is missing"
        exit 1
    fi
    PORT=${AUTOBAHN_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')}
    ADDR="127.0.0.1:$PORT"

    log "building the autobahn_echo example (release)"
    cargo build --release -p helios --example autobahn_echo ||
        die "cargo build --release -p helios --example autobahn_echo failed"

    log "starting autobahn_echo on $ADDR (log: target/autobahn/server.log)"
    # setsid: own process group, so cleanup ends cargo and the server together
    # (cargo run execs the binary on Unix, but do not rely on it).
    setsid cargo run --quiet --release -p helios --example autobahn_echo -- "$ADDR" \
        >"$OUT_BASE/server.log" 2>&1 </dev/null &
    SERVER_PID=$!

    for ((i = 0; i < 600; i++)); do # 60 s
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            tail -n 50 "$OUT_BASE/server.log" >&2 || true
            die "autobahn_echo exited before listening on $ADDR"
        fi
        port_open 127.0.0.1 "$PORT" && break
        sleep 0.1
    done
    port_open 127.0.0.1 "$PORT" || {
        tail -n 50 "$OUT_BASE/server.log" >&2 || true
        die "autobahn_echo did not listen on $ADDR within 60s"
    }
    # Something else may hold the port (an explicit AUTOBAHN_PORT): a server
    # that failed to bind exits right away.
    sleep 0.3
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        tail -n 50 "$OUT_BASE/server.log" >&2 || true
        die "autobahn_echo exited right after start (is $ADDR taken?)"
    fi
fi

# --- run the cases ----------------------------------------------------------
ARGS=("$ADDR")
for c in $CASES; do ARGS+=(-i "$c"); done
ARGS+=(-p "$PARALLEL" -o "$REPORT")

rm -rf "$REPORT"
log "kosoku ${ARGS[*]}"
start=$(date +%s)
# In the background + `wait`, so that INT/TERM reach the traps at once
# (bash defers traps while a foreground command runs). kosoku prints only at
# the end of the run, so its log is shown afterwards.
timeout --kill-after=10 "$TIMEOUT" "${KOSOKU[@]}" "${ARGS[@]}" >"$OUT_BASE/kosoku.log" 2>&1 </dev/null &
KOSOKU_PID=$!
set +e
wait "$KOSOKU_PID"
krc=$?
set -e
KOSOKU_PID=""
cat "$OUT_BASE/kosoku.log"
elapsed=$(($(date +%s) - start))
log "kosoku finished in ${elapsed}s (exit $krc)"
[ "$krc" -eq 124 ] && die "kosoku did not finish within ${TIMEOUT}s"

if [ -n "$SERVER_PID" ] && ! kill -0 "$SERVER_PID" 2>/dev/null; then
    log "WARNING: the server process died during the run; tail of target/autobahn/server.log:"
    tail -n 30 "$OUT_BASE/server.log" || true
fi

[ -f "$REPORT/index.json" ] || die "kosoku wrote no $REPORT/index.json (exit $krc); see target/autobahn/kosoku.log"

# --- check the report -----------------------------------------------------------
set +e
python3 - "$REPORT/index.json" "$CASES" <<'PY'
import fnmatch
import json
import sys
from collections import Counter, defaultdict

OK_BEHAVIOR = {"OK", "NON-STRICT", "INFORMATIONAL"}
OK_CLOSE = {"OK", "INFORMATIONAL"}

path, globs = sys.argv[1], sys.argv[2].split()
with open(path) as f:
    index = json.load(f)  # {agent: {case_id: {behavior, behaviorClose, ...}}}


def key(case_id):
    return [int(p) for p in case_id.split(".")]


total = 0
failures = []
groups = defaultdict(Counter)
seen = set()
for agent, cases in sorted(index.items()):
    for case_id in sorted(cases, key=key):
        entry = cases[case_id]
        total += 1
        seen.add(case_id)
        behavior = entry.get("behavior")
        close = entry.get("behaviorClose")
        group = case_id.split(".")[0]
        groups[group][behavior] += 1
        groups[group]["cases"] += 1
        if behavior not in OK_BEHAVIOR or (close is not None and close not in OK_CLOSE):
            groups[group]["failed"] += 1
            failures.append((agent, case_id, behavior, close, entry.get("remoteCloseCode"), entry.get("reportfile")))

cols = ["cases", "OK", "NON-STRICT", "INFORMATIONAL", "failed"]
print()
print(f"{'group':>6} " + " ".join(f"{c:>13}" for c in cols))
for group in sorted(groups, key=int):
    print(f"{group:>6} " + " ".join(f"{groups[group][c]:>13}" for c in cols))
totals = Counter()
for g in groups.values():
    totals.update(g)
print(f"{'total':>6} " + " ".join(f"{totals[c]:>13}" for c in cols))
print()

problems = 0
# Every requested glob must have selected at least one case: guards against a
# kosoku that silently ran nothing.
for g in globs:
    if not any(fnmatch.fnmatchcase(c, g) for c in seen):
        print(f"MISSING: no case in the report matches {g!r}")
        problems += 1

if failures:
    print(f"FAILING CASES ({len(failures)}):")
    print(f"  {'case':<10} {'behavior':<14} {'behaviorClose':<16} {'closeCode':<9} report")
    for agent, case_id, behavior, close, code, report in failures:
        print(f"  {case_id:<10} {str(behavior):<14} {str(close):<16} {str(code):<9} {report}")
    problems += len(failures)

if total == 0:
    print("no cases in the report")
    problems += 1

if problems:
    sys.exit(1)
print(f"all {total} cases acceptable (behavior OK/NON-STRICT/INFORMATIONAL, behaviorClose OK/INFORMATIONAL)")
PY
prc=$?
set -e

log "report: target/autobahn/report/index.html"
if [ "$prc" -ne 0 ]; then
    die "RFC 6455 conformance FAILED (see the table above and target/autobahn/report/)"
fi
if [ "$krc" -ne 0 ]; then
    die "kosoku exited $krc although the report shows no failing case; see target/autobahn/kosoku.log"
fi
log "RFC 6455 conformance passed in ${elapsed}s"
