#!/usr/bin/env bash
# Install everything the test suite needs, idempotently.
#
# Safe to run any number of times: each dependency is checked first and only
# installed when missing, so a second run takes a second or two.
#
#   - kosoku (PyPI)          Autobahn TestSuite runner used by scripts/autobahn.sh
#   - chromium (Debian apt)  /usr/bin/chromium, driven by browser tests via playwright-core
#   - npm ci                 in clients/js and crates/helios-server/tests/console (bench/ installs its own: bench/run.sh)
#   - Redis  on 127.0.0.1:6379 and NATS (+JetStream) on 127.0.0.1:4222, started if down
#
# Environment knobs:
#   KOSOKU_VERSION   pinned kosoku version (default 0.1.0; the report parser in
#                    scripts/autobahn.sh is written against its index.json format)
#   SKIP_CHROMIUM=1  do not install chromium (e.g. a developer with no browser tests to run)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

KOSOKU_VERSION=${KOSOKU_VERSION:-0.1.0}
export DEBIAN_FRONTEND=noninteractive
# playwright-core never downloads browsers, but make sure nothing else tries to:
# the only reachable registries are crates.io, PyPI, Debian and npm.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

log() { printf '[install-test-deps] %s\n' "$*"; }
die() { printf '[install-test-deps] ERROR: %s\n' "$*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 && SUDO="sudo" || true
fi

port_open() { # host port
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

wait_port() { # host port what seconds
    local host=$1 port=$2 what=$3 secs=${4:-30} i
    for ((i = 0; i < secs * 10; i++)); do
        port_open "$host" "$port" && return 0
        sleep 0.1
    done
    die "$what did not answer on $host:$port within ${secs}s"
}

# --- apt packages -----------------------------------------------------------
APT_UPDATED=0
apt_install() { # pkg...
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        $SUDO apt-get -o DPkg::Lock::Timeout=300 update -qq
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    $SUDO apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "$@" >/dev/null
}

if [ "${SKIP_CHROMIUM:-0}" != 1 ]; then
    if [ -x /usr/bin/chromium ]; then
        log "chromium: present ($(/usr/bin/chromium --version 2>/dev/null || echo '?'))"
    else
        apt_install chromium
        [ -x /usr/bin/chromium ] || die "chromium installed but /usr/bin/chromium is missing"
        log "chromium: installed ($(/usr/bin/chromium --version 2>/dev/null || echo '?'))"
    fi
fi

# --- Python: kosoku ---------------------------------------------------------
command -v python3 >/dev/null 2>&1 || die "python3 not found"
installed_kosoku=$(python3 -c 'import importlib.metadata as m; print(m.version("kosoku"))' 2>/dev/null || true)
if [ "$installed_kosoku" = "$KOSOKU_VERSION" ]; then
    log "kosoku: $installed_kosoku present"
else
    log "kosoku: installing $KOSOKU_VERSION (found: ${installed_kosoku:-none})"
    # pyenv's pip is not "externally managed"; Debian's system python3 is.
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
        "kosoku==$KOSOKU_VERSION" 2>/dev/null ||
        python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
            --break-system-packages "kosoku==$KOSOKU_VERSION"
    # pyenv needs its shims regenerated for a new console script.
    command -v pyenv >/dev/null 2>&1 && pyenv rehash 2>/dev/null || true
    python3 -c 'import kosoku' || die "kosoku did not install"
fi

# --- npm --------------------------------------------------------------------
for dir in clients/js crates/helios-server/tests/console; do
    if [ ! -f "$ROOT/$dir/package-lock.json" ]; then
        log "npm: $dir has no package-lock.json, skipping"
        continue
    fi
    command -v npm >/dev/null 2>&1 || die "npm not found (needed for $dir)"
    # npm writes node_modules/.package-lock.json on install; when it is newer
    # than the lockfile, node_modules is up to date and `npm ci` (which wipes
    # node_modules first) can be skipped.
    hidden="$ROOT/$dir/node_modules/.package-lock.json"
    if [ -f "$hidden" ] && [ "$hidden" -nt "$ROOT/$dir/package-lock.json" ]; then
        log "npm: $dir/node_modules up to date"
    else
        log "npm ci in $dir"
        (cd "$ROOT/$dir" && npm ci --no-audit --no-fund --loglevel=error) ||
            die "npm ci failed in $dir"
    fi
done

# --- Redis ------------------------------------------------------------------
if port_open 127.0.0.1 6379; then
    log "redis: up on 127.0.0.1:6379"
else
    command -v redis-server >/dev/null 2>&1 || apt_install redis-server
    log "redis: starting"
    $SUDO mkdir -p /var/lib/redis /var/log/redis
    $SUDO redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
    wait_port 127.0.0.1 6379 redis 30
    log "redis: up on 127.0.0.1:6379"
fi

# --- NATS (JetStream) ---------------------------------------------------------
if port_open 127.0.0.1 4222; then
    log "nats: up on 127.0.0.1:4222"
else
    [ -x /usr/sbin/nats-server ] || apt_install nats-server
    log "nats: starting"
    $SUDO mkdir -p /var/lib/nats-server
    $SUDO start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
    wait_port 127.0.0.1 4222 nats 30
    log "nats: up on 127.0.0.1:4222"
fi

log "done"
