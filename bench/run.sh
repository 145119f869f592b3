#!/usr/bin/env bash
# Side-by-side benchmark: Helios against Bun, Node `ws`, uWebSockets.js and
# Socket.IO, all serving the same operations (system:echo, room
# subscribe/publish) over loopback.
#
# Each server runs pinned to core 0 (taskset -c 0), the load generator
# (helios-bench) to core 1. Servers are interleaved (A B C ... A B C ...) over
# ROUNDS rounds so a slow spell of the machine hits every server alike; the
# summary takes the median per server and test and prints ratios vs Helios.
# The load generator's own CPU use is in every report: a run where it was
# above 90% of its core is flagged, since it, not the server, may have been
# the limit. The open loop (rpc-half) spins, so its core is always busy;
# there the flag is a schedule lag p99 above 100 µs (requests left late: the
# generator at its limit, or a server that does not drain its sockets).
#
# Usage: bench/run.sh            (about 6 minutes)
#   env: ROUNDS DUR CONNS DEPTH SUBS FRATE FRATE_HI IDLE_N HELIOS_IDLE_N SERVERS SKIP_BUILD
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(cd .. && pwd)

ROUNDS=${ROUNDS:-2}
DUR=${DUR:-4}                # measured seconds per run
CONNS=${CONNS:-32}           # rpc connections
DEPTH=${DEPTH:-8}            # rpc requests in flight per connection
SUBS=${SUBS:-1000}           # fan-out subscribers
FRATE=${FRATE:-200}          # fan-out publishes/s, moderate (latency)
FRATE_HI=${FRATE_HI:-1000}   # fan-out publishes/s, heavy (capacity)
IDLE_N=${IDLE_N:-10000}      # idle connections, every server
HELIOS_IDLE_N=${HELIOS_IDLE_N:-19000}  # idle connections, Helios alone
SERVERS=${SERVERS:-"helios bun node-ws uws socketio"}

# Each connection is a file descriptor on both sides; take what we may.
ulimit -n "$(ulimit -Hn)"
FD_LIMIT=$(ulimit -n)

[ -d node_modules ] || npm ci --no-audit --no-fund
if [ -z "${SKIP_BUILD:-}" ]; then
  (cd "$ROOT" && cargo build --release -p helios-bench -p helios-server)
fi
HB="$ROOT/target/release/helios-bench"
HELIOS="$ROOT/target/release/helios"
BUN=""
for b in node_modules/bun/bin/bun.exe node_modules/@oven/bun-linux-x64/bin/bun node_modules/.bin/bun; do
  if [ -x "$b" ] && "$b" --version >/dev/null 2>&1; then BUN=$b; break; fi
done
if [ -z "$BUN" ]; then echo "bun binary not found: skipping bun" >&2; SERVERS=${SERVERS/bun/}; fi
if ! node -e "require('uwebsockets')" 2>/dev/null; then
  echo "uwebsockets does not load on $(node --version): skipping uws" >&2; SERVERS=${SERVERS/uws/}
fi

mkdir -p results
OUT="results/run-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
: > "$OUT"
PID=""
PORT=7790

port_of() { case $1 in helios) echo 7791;; bun) echo 7792;; node-ws) echo 7793;; uws) echo 7794;; socketio) echo 7795;; esac; }
url_of() {
  local p; p=$(port_of "$1")
  if [ "$1" = socketio ]; then echo "--proto socketio --url ws://127.0.0.1:$p/socket.io/?EIO=4&transport=websocket"
  else echo "--url ws://127.0.0.1:$p/ws"; fi
}

start_server() {
  local name=$1 port; port=$(port_of "$1")
  case $name in
    helios)   taskset -c 0 "$HELIOS" serve --bind "127.0.0.1:$port" --log-level error & ;;
    bun)      taskset -c 0 "$BUN" bun-server.js "$port" 2>/dev/null & ;;
    node-ws)  taskset -c 0 node node-ws.js "$port" 2>/dev/null & ;;
    uws)      taskset -c 0 node uws-server.js "$port" 2>/dev/null & ;;
    socketio) taskset -c 0 node sio-server.js "$port" 2>/dev/null & ;;
  esac
  PID=$!
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then sleep 0.3; return 0; fi
    sleep 0.1
  done
  echo "$name did not start on port $port" >&2; return 1
}

stop_server() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  PID=""
  sleep 0.5
}
trap stop_server EXIT

# hb NAME TEST ROUND args... : one helios-bench run on core 1, one JSON line out.
hb() {
  local name=$1 test=$2 round=$3; shift 3
  local report
  # shellcheck disable=SC2046
  if report=$(timeout 120 taskset -c 1 "$HB" "$@" $(url_of "$name") 2>/dev/null); then
    printf '{"server":"%s","test":"%s","round":%s,"report":%s}\n' "$name" "$test" "$round" "$report" >> "$OUT"
    printf '  %-9s %-12s %s\n' "$name" "$test" "$(node summarize.js --line <<<"$report")" >&2
  else
    printf '  %-9s %-12s FAILED\n' "$name" "$test" >&2
  fi
}

echo "helios-bench side-by-side: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), fd limit $FD_LIMIT" >&2
echo "results: bench/$OUT" >&2
for round in $(seq "$ROUNDS"); do
  echo "round $round" >&2
  for s in $SERVERS; do
    start_server "$s"
    hb "$s" rpc "$round" rpc --connections "$CONNS" --depth "$DEPTH" --duration-secs "$DUR" --warmup-secs 1 --server-pid "$PID"
    if [ "$round" = 1 ]; then
      # Open loop at half the throughput this server just reached.
      half=$(node summarize.js --half "$OUT" "$s")
      hb "$s" rpc-half "$round" rpc --connections "$CONNS" --rate "$half" --duration-secs "$DUR" --warmup-secs 1 --server-pid "$PID"
    fi
    hb "$s" fanout "$round" fanout --subscribers "$SUBS" --rate "$FRATE" --duration-secs "$DUR" --source-addrs 2 --server-pid "$PID"
    hb "$s" fanout-hi "$round" fanout --subscribers "$SUBS" --rate "$FRATE_HI" --duration-secs "$DUR" --source-addrs 2 --server-pid "$PID"
    stop_server
  done
done

echo "idle memory (fresh servers)" >&2
for s in $SERVERS; do
  start_server "$s"
  hb "$s" idle 1 idle --connections "$IDLE_N" --pid "$PID" --source-addrs 4
  stop_server
done
if [[ " $SERVERS " == *" helios "* ]]; then
  start_server helios
  hb helios idle-max 1 idle --connections "$HELIOS_IDLE_N" --pid "$PID" --source-addrs 4
  stop_server
fi

node summarize.js "$OUT"
