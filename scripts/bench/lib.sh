# Helpers shared by the benchmark scripts (scripts/bench.sh, scripts/bench-cluster.sh,
# scripts/bench-edge.sh). Source it: it only defines functions.
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

# --- the production stack's services -----------------------------------------------------------
# Where PostgreSQL, Redis and the S3 server are (scripts/services.sh's addresses unless the
# BENCH_* variables say otherwise); psql_admin and s3 (scripts/bench/s3.py) act on them.
production_services() {
    S3_ENDPOINT=${BENCH_S3_ENDPOINT:-http://127.0.0.1:9100}
    S3_KEY=${BENCH_S3_ACCESS_KEY:-aerugo}
    S3_SECRET=${BENCH_S3_SECRET_KEY:-aerugo-secret}
    S3_REGION_NAME=${BENCH_S3_REGION:-us-east-1}
    PG=${BENCH_PG:-postgres://aerugo:aerugo@127.0.0.1:5432}
    REDIS=${BENCH_REDIS:-127.0.0.1:6379}
}
psql_admin() { PGOPTIONS=--client-min-messages=warning psql -X -q -v ON_ERROR_STOP=1 "$PG/postgres" "$@"; }
s3() { S3_ACCESS_KEY=$S3_KEY S3_SECRET_KEY=$S3_SECRET S3_REGION=$S3_REGION_NAME python3 "$HELPERS/s3.py" "$S3_ENDPOINT" "$@"; }

# Appends Aerugo's production sections (S3 straight to $S3_ENDPOINT, PostgreSQL, Redis) to a
# configuration file.
write_production_conf() { # file bucket database redis-key-prefix
    cat >>"$1" <<EOF

[storage]
type = "s3"
bucket = "$2"
region = "$S3_REGION_NAME"
endpoint = "$S3_ENDPOINT"
path_style = true
access_key = "$S3_KEY"
secret_key = "$S3_SECRET"

[database]
url = "$PG/$3"
migrate = true

[cache]
type = "redis"
redis_url = "redis://$REDIS/0"
redis_key_prefix = "$4"
EOF
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

# --- test image --------------------------------------------------------------------------------
# An OCI image around the benchmark blob: a config blob at `config` and a manifest at `manifest`
# naming the blob as its one layer. Sets CONFIG_DIGEST, CONFIG_SIZE, MANIFEST_DIGEST,
# MANIFEST_BYTES and MT (the manifest's media type).
write_image() { # config manifest blob_digest blob_bytes
    MT=application/vnd.oci.image.manifest.v1+json
    printf '%s' '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["'"$3"'"]}}' >"$1"
    CONFIG_DIGEST=sha256:$(sha256sum "$1" | cut -d' ' -f1)
    CONFIG_SIZE=$(stat -c %s "$1")
    printf '%s' '{"schemaVersion":2,"mediaType":"'"$MT"'","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"'"$CONFIG_DIGEST"'","size":'"$CONFIG_SIZE"'},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"'"$3"'","size":'"$4"'}],"annotations":{"org.opencontainers.image.title":"aerugo benchmark"}}' >"$2"
    MANIFEST_DIGEST=sha256:$(sha256sum "$2" | cut -d' ' -f1)
    MANIFEST_BYTES=$(stat -c %s "$2")
}

# Pushes the image written by write_image (config blob, then the manifest as tag `tag`; the
# layer must be there already) and checks that the registry returns the manifest's bytes.
push_image() { # base repo config manifest tag
    local out code got
    out=$(push_mono "$1" "$2" put "$3" "$CONFIG_DIGEST")
    [[ ${out%% *} == 201 ]] || die "config push to $1: HTTP ${out%% *}"
    code=$(curl -sS -o /dev/null -w '%{http_code}' -X PUT -H "Content-Type: $MT" \
        --data-binary @"$4" "$1/v2/$2/manifests/$5")
    [[ $code == 201 ]] || die "manifest push to $1: HTTP $code"
    got=$(curl -fsS -H "Accept: $MT" "$1/v2/$2/manifests/$MANIFEST_DIGEST" | sha256sum | cut -d' ' -f1)
    [[ sha256:$got == "$MANIFEST_DIGEST" ]] || die "$1 answers the manifest with other bytes"
}

# --- registry clients --------------------------------------------------------------------------
# Monolithic push, the spec's two forms: `post`, a single `POST ?digest=` with the body
# (distribution 2.8 does not implement it: it answers 202 and ignores the body), or `put`,
# `POST` then one `PUT <location>?digest=` carrying the whole body. Prints "status seconds":
# curl's own transfer time (time_total of the POST + the PUT), without process start-up.
# curl streams the file from stdin (-T -, from the page cache in 64 KiB blocks, with an explicit
# Content-Length instead of chunked encoding; `-T file` would append the file name to the URL's
# trailing slash): with --data-binary @file it first copies the whole file into a growing
# buffer, which costs the shared cores more CPU than the transfer. Needs $T.
push_mono() { # base repo form file digest
    local base=$1 repo=$2 form=$3 file=$4 digest=$5 out loc code t_post t_put
    local body=(-H 'Content-Type: application/octet-stream' -H 'Expect:' -H 'Transfer-Encoding:'
        -H "Content-Length: $(stat -c %s "$file")" -T -)
    if [[ $form == post ]]; then
        curl -sS -o /dev/null -w '%{http_code} %{time_total}' -X POST "${body[@]}" \
            "$base/v2/$repo/blobs/uploads/?digest=$digest" <"$file"
        return
    fi
    out=$(curl -sS -o /dev/null -D "$T/post.headers" -w '%{http_code} %{time_total}' -X POST "$base/v2/$repo/blobs/uploads/")
    read -r code t_post <<<"$out"
    [[ $code == 202 ]] || { echo "$code 0"; return; }
    loc=$(tr -d '\r' <"$T/post.headers" | awk 'tolower($1)=="location:" {print $2}')
    [[ -n $loc ]] || { echo "no-location 0"; return; }
    [[ $loc == /* ]] && loc=$base$loc
    if [[ $loc == *\?* ]]; then loc="$loc&digest=$digest"; else loc="$loc?digest=$digest"; fi
    out=$(curl -sS -o /dev/null -w '%{http_code} %{time_total}' -X PUT "${body[@]}" "$loc" <"$file")
    read -r code t_put <<<"$out"
    echo "$code $(calc "$t_post + $t_put")"
}

# --- oha -----------------------------------------------------------------------------------------
# oha's flags for a JSON report without the TUI, whatever its version; into the array OHA_ARGS.
oha_setup() {
    OHA_ARGS=(-j)
    oha --help 2>&1 | grep -q -- '--output-format' && OHA_ARGS=(--output-format json)
    if oha --help 2>&1 | grep -q -- '--no-tui'; then OHA_ARGS+=(--no-tui); fi
}

# One oha measurement of `url`: a warm-up (connections, caches: 20 requests per connection),
# then `seconds` at `conns` connections, with the CPU ticks of `pids` (a space-separated list)
# taken around it. Prints "req/s p50_ms p99_ms ok other_statuses errors server_cpu_ms_per_1000"
# (scripts/bench/oha_summary.py; only 2xx answers count). Needs oha_setup, $T and $HELPERS.
oha_measure() { # pids conns seconds method url [header]
    local pids=$1 conns=$2 secs=$3 method=$4 url=$5 c0 c1 rps p50 p99 ok other errs
    local hdr=()
    [[ -n ${6:-} ]] && hdr=(-H "$6")
    oha "${OHA_ARGS[@]}" -m "$method" "${hdr[@]}" -c "$conns" -n $((conns * 20)) "$url" >/dev/null 2>&1 || true
    # shellcheck disable=SC2086 # a list of pids
    c0=$(cpu_ticks $pids)
    oha "${OHA_ARGS[@]}" -m "$method" "${hdr[@]}" -c "$conns" -z "${secs}s" "$url" >"$T/oha.json" 2>"$T/oha.err" \
        || { cat "$T/oha.err" >&2; die "oha failed"; }
    # shellcheck disable=SC2086
    c1=$(cpu_ticks $pids)
    read -r rps p50 p99 ok other errs < <(python3 "$HELPERS/oha_summary.py" <"$T/oha.json")
    ((ok > 0)) || die "$method $url: no successful request"
    echo "$rps $p50 $p99 $ok $other $errs $(calc "round(($c1 - $c0) / $CLK_TCK * 1000 / $ok * 1000, 2)")"
}

# --- nginx ---------------------------------------------------------------------------------------
# Writes an nginx.conf serving `root` on `listen` with sendfile, no access log, temp files
# under `prefix`. Extra `location` blocks may follow as the 5th argument, `upstream` and `map`
# blocks (the http level) as the 6th.
write_nginx_conf() { # file prefix listen root [server-extra] [http-extra]
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
    ${6:-}
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

# BENCH_PIN=1: this script (and all it starts) on CPU 0, and the array named $1 set to the
# prefix that starts a server under test on CPU 1; otherwise the array is empty.
pin_servers() {
    local -n prefix=$1
    prefix=()
    [[ "${BENCH_PIN:-0}" == 1 ]] || return 0
    command -v taskset >/dev/null 2>&1 || die "BENCH_PIN=1 needs taskset (util-linux)"
    (($(nproc) >= 2)) || die "BENCH_PIN=1 needs two CPUs"
    taskset -cp 0 $$ >/dev/null
    prefix=(taskset -c 1)
}
