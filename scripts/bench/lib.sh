# Helpers shared by the benchmark scripts (scripts/bench-edge.sh; scripts/bench.sh still has its
# own copies of most of these, to be switched over). Source it: it only defines functions.
#
#   source "$ROOT/scripts/bench/lib.sh"
#
# The caller sets `set -euo pipefail` and, before using wait_ready, a directory $T for logs.

step() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }
warn() { printf '\033[33mwarning: %s\033[0m\n' "$*" >&2; }
die() { printf '\033[31merror: %s\033[0m\n' "$*" >&2; exit 1; }

# --- tools -------------------------------------------------------------------------------------
is_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# Installs the Debian packages that are missing (no-op with AERUGO_SKIP_INSTALL=1 or without
# dpkg). Any nginx flavour counts for nginx-light, any python3 for python3.
install_debs() {
    [[ "${AERUGO_SKIP_INSTALL:-0}" != 1 ]] && command -v dpkg-query >/dev/null 2>&1 || return 0
    local missing=() p
    for p in "$@"; do
        if [[ $p == nginx-light ]] && { command -v nginx || [[ -x /usr/sbin/nginx ]]; } >/dev/null 2>&1; then continue; fi
        if [[ $p == python3 ]] && command -v python3 >/dev/null 2>&1; then continue; fi
        is_installed "$p" || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    note "installing ${missing[*]}"
    local sudo_cmd=()
    [[ $EUID -ne 0 ]] && sudo_cmd=(sudo)
    if ! "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"; then
        "${sudo_cmd[@]}" apt-get update
        "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
    fi
}

# Builds the release `aerugo` into $CARGO_TARGET_DIR (the shared ~/.cache/aerugo-target by
# default; RUSTFLAGS and profiles untouched) unless AERUGO_BIN is set; sets AERUGO_BIN.
build_aerugo() {
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aerugo-target}"
    if [[ -z "${AERUGO_BIN:-}" ]]; then
        step "building aerugo (release)"
        (cd "$ROOT" && cargo build --release --bin aerugo >&2)
        AERUGO_BIN=$CARGO_TARGET_DIR/release/aerugo
    fi
    [[ -x "$AERUGO_BIN" ]] || die "no aerugo binary at $AERUGO_BIN"
}

# --- small utilities ---------------------------------------------------------------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
calc() { python3 -c "print($1)"; }
CLK_TCK=$(getconf CLK_TCK)

# --- /proc sampling ----------------------------------------------------------------------------
# A process and its direct children (nginx: master + workers).
tree_pids() { echo "$1" $(pgrep -P "$1" 2>/dev/null || true); }

# utime+stime of the given pids, in clock ticks (all threads; /proc/<pid>/stat fields 14+15).
cpu_ticks() {
    local total=0 p line rest f
    for p in "$@"; do
        read -r line <"/proc/$p/stat" 2>/dev/null || continue
        rest=${line##*) }
        read -r -a f <<<"$rest"
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}

# Resets the peak-RSS mark (VmHWM) of the given pids to their current RSS (clear_refs 5).
reset_hwm() { local p; for p in "$@"; do echo 5 >"/proc/$p/clear_refs" 2>/dev/null || true; done; }

# Sum of a /proc/<pid>/status field (VmHWM, VmRSS) over the given pids, in MiB.
status_mib() {
    local field=$1 p kb=0 v
    shift
    for p in "$@"; do
        v=$(awk -v f="$field:" '$1 == f {print $2}' "/proc/$p/status" 2>/dev/null || true)
        kb=$((kb + ${v:-0}))
    done
    calc "round($kb / 1024, 1)"
}
hwm_mib() { status_mib VmHWM "$@"; }
rss_mib() { status_mib VmRSS "$@"; }

# --- processes ---------------------------------------------------------------------------------
# Waits until `url` answers 2xx; dies (showing the log) if `pid` exits first.
wait_ready() { # name pid url log
    local i
    for i in $(seq 1 300); do
        if curl -fsS -o /dev/null "$3" 2>/dev/null; then return 0; fi
        kill -0 "$2" 2>/dev/null || { cat "$4" >&2 || true; die "$1 exited"; }
        sleep 0.1
    done
    die "$1 is not answering on $3"
}

# Stops a process we started: `signal` (default TERM), then KILL after `grace` seconds.
stop_pid() { # pid [signal] [grace]
    local p=$1 sig=${2:-TERM} grace=${3:-10} i
    [[ -n $p ]] || return 0
    kill "-$sig" "$p" 2>/dev/null || return 0
    for i in $(seq 1 $((grace * 10))); do
        kill -0 "$p" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
    wait "$p" 2>/dev/null || true
}

# --- nginx ---------------------------------------------------------------------------------------
# Writes an nginx.conf serving `root` on `listen` with sendfile, no access log, temp files
# under `prefix`. Extra `location` blocks may follow as the 4th argument.
write_nginx_conf() { # file prefix listen root [extra]
    local user=""
    [[ $EUID -eq 0 ]] && user="user root;"
    cat >"$1" <<EOF
$user
worker_processes auto;
daemon off;
pid $2/nginx.pid;
error_log $2/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    client_body_temp_path $2/client_body;
    proxy_temp_path $2/proxy;
    fastcgi_temp_path $2/fastcgi;
    uwsgi_temp_path $2/uwsgi;
    scgi_temp_path $2/scgi;
    server {
        listen $3;
        root $4;
        ${5:-}
    }
}
EOF
}

# --- machine -------------------------------------------------------------------------------------
machine_info() {
    echo "date:      $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "cpu:       $(nproc) × $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo) ($(grep -q sha_ni /proc/cpuinfo && echo 'SHA-NI' || echo 'no SHA-NI'))"
    echo "memory:    $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "os:        $(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r)"
    echo "disk:      $(df -hT "${T:-/tmp}" | awk 'NR==2 {print $2 ", " $3 " (" $1 ")"}')"
    if [[ -n "${AERUGO_BIN:-}" ]]; then
        echo "aerugo:    $("$AERUGO_BIN" --version 2>/dev/null) (git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ', dirty'))"
    fi
    command -v docker-registry >/dev/null 2>&1 && echo "registry:  $(docker-registry --version 2>/dev/null)"
    { command -v nginx || [[ -x /usr/sbin/nginx ]]; } >/dev/null 2>&1 && echo "nginx:     $("$(command -v nginx || echo /usr/sbin/nginx)" -v 2>&1 | sed 's/.*: //')"
    echo "curl:      $(curl --version | head -1 | cut -d' ' -f1-2)"
    echo "load:      $(uptime | sed 's/.*load average: //') (1/5/15 min) at start"
}
