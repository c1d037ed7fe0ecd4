#!/usr/bin/env bash
# Aerugo against the CNCF distribution registry and nginx, side by side on loopback, in one
# run (issue 2, "Benchmark"). See docs/benchmarks.md for what it measures and the figures.
#
#   ./scripts/bench.sh                                   # full size: 1 GiB blob, 10 s runs
#   BENCH_SECONDS=3 BENCH_BLOB_MIB=256 ./scripts/bench.sh   # quick check
#
# Idempotent and offline once the tools are there: installs the missing Debian packages
# (docker-registry, nginx-light, curl, python3), `cargo install oha --locked` only when oha is
# missing, builds `aerugo` in release, starts the three servers on free loopback ports with
# data under a temporary directory, measures, prints the tables and stops everything on exit.
#
# Environment:
#   BENCH_SECONDS=10      duration of each oha run (manifest GET, blob HEAD)
#   BENCH_BLOB_MIB=1024   size of the blob pushed and pulled
#   BENCH_CHUNK_MIB=16    chunk size of the chunked push
#   BENCH_CLIENTS=8       concurrent clients of the parallel blob GET
#   BENCH_CONNS=64        connections of the oha runs
#   BENCH_REPEAT=3        pushes and blob GETs are repeated and the best run kept
#   BENCH_OHA_REPEAT=1    the same for the oha runs (the run with the most req/s is kept)
#   BENCH_OUT=FILE        also write the Markdown report to FILE
#   BENCH_KEEP=1          keep the temporary directory (logs, data) for inspection
#   AERUGO_BIN=PATH       use this binary instead of building one
#   AERUGO_SKIP_INSTALL=1 never call apt-get/cargo install
#   CARGO_TARGET_DIR      defaults to ~/.cache/aerugo-target
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
HELPERS=$ROOT/scripts/bench

SECONDS_PER_RUN=${BENCH_SECONDS:-10}
BLOB_MIB=${BENCH_BLOB_MIB:-1024}
CHUNK_MIB=${BENCH_CHUNK_MIB:-16}
CLIENTS=${BENCH_CLIENTS:-8}
CONNS=${BENCH_CONNS:-64}
REPEAT=${BENCH_REPEAT:-3}
OHA_REPEAT=${BENCH_OHA_REPEAT:-1}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aerugo-target}"
export PATH="$HOME/.cargo/bin:$PATH"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }
warn() { printf '\033[33mwarning: %s\033[0m\n' "$*" >&2; }
die() { printf '\033[31merror: %s\033[0m\n' "$*" >&2; exit 1; }

# --- tools -----------------------------------------------------------------------------------
is_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
step "checking tools"
if [[ "${AERUGO_SKIP_INSTALL:-0}" != 1 ]] && command -v dpkg-query >/dev/null 2>&1; then
    missing=()
    for p in docker-registry nginx-light curl python3; do
        # Any nginx flavour (nginx-full, nginx-extras…) will do; any python3 too.
        if [[ $p == nginx-light ]] && { command -v nginx || [[ -x /usr/sbin/nginx ]]; } >/dev/null 2>&1; then continue; fi
        if [[ $p == python3 ]] && command -v python3 >/dev/null 2>&1; then continue; fi
        is_installed "$p" || missing+=("$p")
    done
    if ((${#missing[@]})); then
        note "installing ${missing[*]}"
        sudo_cmd=(); [[ $EUID -ne 0 ]] && sudo_cmd=(sudo)
        if ! "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"; then
            "${sudo_cmd[@]}" apt-get update && "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
        fi
    fi
    if ! command -v oha >/dev/null 2>&1; then
        note "oha missing: cargo install oha --locked"
        cargo install oha --locked
    fi
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
DISTRIBUTION=$(command -v docker-registry || echo /usr/bin/docker-registry)
for t in curl python3 oha "$NGINX" "$DISTRIBUTION"; do
    command -v "$t" >/dev/null 2>&1 || die "$t is not installed"
done
CLK_TCK=$(getconf CLK_TCK)

# --- aerugo ------------------------------------------------------------------------------------
AERUGO_ORIGIN="built from git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' + uncommitted changes')"
if [[ -z "${AERUGO_BIN:-}" ]]; then
    step "building aerugo (release)"
    cargo build --release --bin aerugo >&2
    AERUGO_BIN=$CARGO_TARGET_DIR/release/aerugo
else
    AERUGO_ORIGIN="AERUGO_BIN=$AERUGO_BIN, built $(date -u -r "$AERUGO_BIN" '+%Y-%m-%d %H:%M UTC')"
fi
[[ -x "$AERUGO_BIN" ]] || die "no aerugo binary at $AERUGO_BIN"

# --- temporary directory and cleanup -----------------------------------------------------------
T=$(mktemp -d "${TMPDIR:-/tmp}/aerugo-bench.XXXXXX")
RESULTS=$T/results.env
: >"$RESULTS"
declare -A PID=()
BG_PIDS=()
cleanup() {
    local rc=$?
    for name in "${!PID[@]}"; do
        local p=${PID[$name]}
        [[ -n $p ]] && kill "$p" 2>/dev/null || true
    done
    for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for name in "${!PID[@]}"; do
        local p=${PID[$name]}
        [[ -n $p ]] && wait "$p" 2>/dev/null || true
    done
    if [[ "${BENCH_KEEP:-0}" == 1 ]]; then
        echo "kept $T" >&2
    else
        rm -rf "$T"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

record() { echo "$1=$2" >>"$RESULTS"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
calc() { python3 -c "print($1)"; }
# utime+stime of the given pids, in clock ticks (all threads; /proc/<pid>/stat field 14+15).
cpu_ticks() {
    local total=0 p line rest
    for p in "$@"; do
        read -r line <"/proc/$p/stat" || continue
        rest=${line##*) }
        read -r -a f <<<"$rest"
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}
server_pids() {
    if [[ $1 == nginx ]]; then
        echo "${PID[nginx]}" $(pgrep -P "${PID[nginx]}" || true)
    else
        echo "${PID[$1]}"
    fi
}
# Resets the peak-RSS mark of the server's processes (Linux: clear_refs 5).
reset_hwm() { local p; for p in $(server_pids "$1"); do echo 5 >"/proc/$p/clear_refs" 2>/dev/null || true; done; }
# Sum of VmHWM over the server's processes, in MiB.
hwm_mib() {
    local p kb=0 v
    for p in $(server_pids "$1"); do
        v=$(awk '/^VmHWM:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
        kb=$((kb + ${v:-0}))
    done
    calc "round($kb / 1024, 1)"
}
# CPU seconds (user+sys) of this shell's waited-for children so far, into the variable $1.
# (`times` must run in this shell, not in a $(…) subshell.)
children_cpu() {
    times >"$T/times"
    printf -v "$1" '%s' "$(awk 'NR==2 { n=split($0,a," "); s=0; for(i=1;i<=n;i++){ split(a[i],b,"m"); sub("s","",b[2]); s+=b[1]*60+b[2] } print s }' "$T/times")"
}

# --- machine ------------------------------------------------------------------------------------
step "machine"
{
    echo "date:      $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "cpu:       $(nproc) × $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo) ($(grep -q sha_ni /proc/cpuinfo && echo 'SHA-NI' || echo 'no SHA-NI'))"
    echo "memory:    $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "os:        $(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r)"
    echo "aerugo:    $("$AERUGO_BIN" --version 2>/dev/null) ($AERUGO_ORIGIN)"
    echo "registry:  $("$DISTRIBUTION" --version 2>/dev/null)"
    echo "nginx:     $("$NGINX" -v 2>&1 | sed 's/.*: //')"
    echo "oha:       $(oha --version 2>/dev/null)"
    echo "curl:      $(curl --version | head -1 | cut -d' ' -f1-2)"
    echo "load:      $(uptime | sed 's/.*load average: //') (1/5/15 min) at start"
} | tee "$T/machine.txt" >&2

# --- test data ----------------------------------------------------------------------------------
step "generating a ${BLOB_MIB} MiB blob from /dev/urandom"
mkdir -p "$T/www" "$T/aerugo-data" "$T/distribution-data" "$T/nginx"
chmod 755 "$T" "$T/www"
BLOB=$T/www/blob.bin
BLOB_BYTES=$((BLOB_MIB * 1048576))
head -c "$BLOB_BYTES" /dev/urandom >"$BLOB"
hash_out=$(python3 - "$BLOB" <<'EOF'
import hashlib, sys, time
t = time.process_time()
with open(sys.argv[1], "rb") as f:
    d = hashlib.file_digest(f, "sha256").hexdigest() if hasattr(hashlib, "file_digest") else None
    if d is None:
        f.seek(0); h = hashlib.sha256()
        for b in iter(lambda: f.read(1 << 20), b""): h.update(b)
        d = h.hexdigest()
dt = time.process_time() - t
import os
print(d, os.path.getsize(sys.argv[1]) / dt / 1e6)
EOF
)
DIGEST=sha256:${hash_out%% *}
record hashlib_mbps "${hash_out##* }"
note "digest $DIGEST"
# Context: how fast this disk takes the blob with an fdatasync (Aerugo fsyncs a blob before
# it becomes visible; distribution's filesystem driver does not).
dd_start=$(now)
dd if="$BLOB" of="$T/ddtest" bs=16M conv=fdatasync status=none
dd_end=$(now)
rm -f "$T/ddtest"
record disk_fdatasync_mbps "$(calc "$BLOB_BYTES / ($dd_end - $dd_start) / 1e6")"

CONFIG_JSON='{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["'$DIGEST'"]}}'
printf '%s' "$CONFIG_JSON" >"$T/config.json"
CONFIG_DIGEST=sha256:$(sha256sum "$T/config.json" | cut -d' ' -f1)
CONFIG_SIZE=$(stat -c %s "$T/config.json")
MANIFEST='{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"'$CONFIG_DIGEST'","size":'$CONFIG_SIZE'},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"'$DIGEST'","size":'$BLOB_BYTES'}],"annotations":{"org.opencontainers.image.title":"aerugo benchmark"}}'
printf '%s' "$MANIFEST" >"$T/www/manifest.json"
MANIFEST_DIGEST=sha256:$(sha256sum "$T/www/manifest.json" | cut -d' ' -f1)
MANIFEST_BYTES=$(stat -c %s "$T/www/manifest.json")
MT=application/vnd.oci.image.manifest.v1+json
REPO=bench/app
record blob_mib "$BLOB_MIB"
record manifest_bytes "$MANIFEST_BYTES"
record seconds "$SECONDS_PER_RUN"
record repeat "$REPEAT"
record oha_repeat "$OHA_REPEAT"
record conns "$CONNS"
record clients "$CLIENTS"

# --- servers ------------------------------------------------------------------------------------
declare -A URL=()
URL[aerugo]=http://127.0.0.1:$(free_port)
URL[distribution]=http://127.0.0.1:$(free_port)
URL[nginx]=http://127.0.0.1:$(free_port)

cat >"$T/distribution.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $T/distribution-data
  delete:
    enabled: true
http:
  addr: ${URL[distribution]#http://}
EOF

nginx_user=""
[[ $EUID -eq 0 ]] && nginx_user="user root;"
cat >"$T/nginx/nginx.conf" <<EOF
$nginx_user
worker_processes auto;
daemon off;
pid $T/nginx/nginx.pid;
error_log $T/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    client_body_temp_path $T/nginx/client_body;
    proxy_temp_path $T/nginx/proxy;
    fastcgi_temp_path $T/nginx/fastcgi;
    uwsgi_temp_path $T/nginx/uwsgi;
    scgi_temp_path $T/nginx/scgi;
    server {
        listen ${URL[nginx]#http://};
        root $T/www;
        location = /manifest.json { default_type $MT; }
    }
}
EOF

wait_ready() { # name url
    local i
    for i in $(seq 1 300); do
        if curl -fsS -o /dev/null "$2" 2>/dev/null; then return 0; fi
        kill -0 "${PID[$1]}" 2>/dev/null || { cat "$T/$1.log" >&2 || true; die "$1 exited"; }
        sleep 0.1
    done
    die "$1 is not answering on $2"
}
start() {
    case $1 in
        aerugo)
            (cd "$T" && exec env -u AERUGO_CONFIG LOG_LEVEL=warn "$AERUGO_BIN" serve \
                --listen "${URL[aerugo]#http://}" --data-dir "$T/aerugo-data" >"$T/aerugo.log" 2>&1) &
            PID[aerugo]=$!
            wait_ready aerugo "${URL[aerugo]}/v2/"
            ;;
        distribution)
            "$DISTRIBUTION" serve "$T/distribution.yml" >"$T/distribution.log" 2>&1 &
            PID[distribution]=$!
            wait_ready distribution "${URL[distribution]}/v2/"
            ;;
        nginx)
            "$NGINX" -p "$T/nginx" -e "$T/nginx/error.log" -c "$T/nginx/nginx.conf" >"$T/nginx.log" 2>&1 &
            PID[nginx]=$!
            wait_ready nginx "${URL[nginx]}/manifest.json"
            ;;
    esac
}
stop() {
    local p=${PID[$1]:-}
    [[ -n $p ]] || return 0
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
    PID[$1]=""
}
# A push measures a registry that does not hold the blob yet: stop, wipe, start.
fresh() {
    stop "$1"
    rm -rf "${T:?}/$1-data"
    mkdir -p "$T/$1-data"
    sync
    start "$1"
}

step "starting the servers"
start nginx
for r in aerugo distribution; do start "$r"; done
for s in aerugo distribution nginx; do note "$s: ${URL[$s]} (pid ${PID[$s]})"; done

# --- 1. push ------------------------------------------------------------------------------------
best_max() { # key value: keeps the larger value
    local cur=${BEST[$1]:-}
    if [[ -z $cur ]] || python3 -c "import sys; sys.exit(0 if $2 > $cur else 1)"; then BEST[$1]=$2; fi
}
best_min() {
    local cur=${BEST[$1]:-}
    if [[ -z $cur ]] || python3 -c "import sys; sys.exit(0 if $2 < $cur else 1)"; then BEST[$1]=$2; fi
}
declare -A BEST=()
GIB=$(calc "$BLOB_BYTES / 1073741824")

# Monolithic push, the spec's two forms. A single `POST ?digest=` with the body (`post`);
# distribution 2.8 does not implement it (it answers 202 and ignores the body), so the
# comparable figure is `POST` then one `PUT <location>?digest=` carrying the whole body (`put`).
# The time is curl's own transfer time (time_total of the POST + the PUT), without process
# start-up. curl streams the file from stdin (-T -, read from the page cache in 64 KiB
# blocks, with an explicit Content-Length instead of chunked encoding; `-T file` would append
# the file name to the URL's trailing slash): with --data-binary @file it first copies the
# whole GiB into a growing buffer, which costs the shared 2 cores more CPU than the transfer.
push_mono() { # registry form file digest -> "status seconds"
    local base=${URL[$1]} file=$3 digest=$4 out loc code t_post t_put
    local body=(-H 'Content-Type: application/octet-stream' -H 'Expect:' -H 'Transfer-Encoding:'
        -H "Content-Length: $(stat -c %s "$file")" -T -)
    if [[ $2 == post ]]; then
        curl -sS -o /dev/null -w '%{http_code} %{time_total}' -X POST "${body[@]}" \
            "$base/v2/$REPO/blobs/uploads/?digest=$digest" <"$file"
        return
    fi
    out=$(curl -sS -o /dev/null -D "$T/post.headers" -w '%{http_code} %{time_total}' -X POST "$base/v2/$REPO/blobs/uploads/")
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

# Runs are interleaved (run i of every mode on every registry before run i+1) so that both
# registries see the same background load; the best of the runs is kept for each figure.
for i in $(seq 1 "$REPEAT"); do
    for mode in post put chunked; do
        for r in aerugo distribution; do
            [[ $mode == post && $r == distribution ]] && continue
            fresh "$r"
            step "push $mode, $r, run $i/$REPEAT"
            c0=$(cpu_ticks "${PID[$r]}")
            if [[ $mode != chunked ]]; then
                children_cpu k0
                out=$(push_mono "$r" "$mode" "$BLOB" "$DIGEST") || true
                children_cpu k1
                read -r status secs <<<"$out"
                client_cpu=$(calc "$k1 - $k0")
            else
                out=$(python3 "$HELPERS/push_chunked.py" "${URL[$r]}" "$REPO" "$BLOB" "$DIGEST" $((CHUNK_MIB * 1048576))) || true
                read -r status _bytes secs client_cpu <<<"$out"
            fi
            c1=$(cpu_ticks "${PID[$r]}")
            [[ ${status:-} == 201 ]] || die "push $mode to $r answered '${out:-nothing}' (log: $T/$r.log)"
            mbps=$(calc "round($BLOB_BYTES / $secs / 1e6, 1)")
            cpu=$(calc "round(($c1 - $c0) / $CLK_TCK / $GIB, 3)")
            note "$mbps MB/s in $(calc "round($secs, 3)") s; server $cpu CPU-s/GiB, client $(calc "round($client_cpu, 2)") CPU-s"
            best_max "push_${mode}_mbps_$r" "$mbps"
            best_min "push_${mode}_cpu_per_gib_$r" "$cpu"
            best_min "push_${mode}_client_cpu_per_gib_$r" "$(calc "round($client_cpu / $GIB, 3)")"
        done
    done
done

# The blob is in place (last push); add a config and the manifest.
step "pushing the manifest"
for r in aerugo distribution; do
    out=$(push_mono "$r" put "$T/config.json" "$CONFIG_DIGEST")
    [[ ${out%% *} == 201 ]] || die "config push to $r: HTTP ${out%% *}"
    code=$(curl -sS -o /dev/null -w '%{http_code}' -X PUT -H "Content-Type: $MT" \
        --data-binary @"$T/www/manifest.json" "${URL[$r]}/v2/$REPO/manifests/latest")
    [[ $code == 201 ]] || die "manifest push to $r: HTTP $code"
    got=$(curl -fsS -H "Accept: $MT" "${URL[$r]}/v2/$REPO/manifests/$MANIFEST_DIGEST" | sha256sum | cut -d' ' -f1)
    [[ sha256:$got == "$MANIFEST_DIGEST" ]] || die "$r answers the manifest with other bytes"
done

# --- 2. blob GET, 5. CPU per GiB, 6. peak RSS ---------------------------------------------------
blob_url() { if [[ $1 == nginx ]]; then echo "${URL[nginx]}/blob.bin"; else echo "${URL[$1]}/v2/$REPO/blobs/$DIGEST"; fi; }

step "checking the blob each server returns"
for s in aerugo distribution nginx; do
    got=$(curl -fsS "$(blob_url "$s")" | sha256sum | cut -d' ' -f1)
    [[ sha256:$got == "$DIGEST" ]] || die "$s returned other bytes for the blob"
done

for i in $(seq 1 "$REPEAT"); do
    for s in aerugo distribution nginx; do
        url=$(blob_url "$s")
        step "blob GET, $s, run $i/$REPEAT"
        out=$(curl -fsS -o /dev/null -w '%{size_download} %{time_total}' "$url")
        read -r bytes secs <<<"$out"
        [[ $bytes == "$BLOB_BYTES" ]] || die "$s: 1-client GET got $bytes bytes"
        mbps=$(calc "round($bytes / $secs / 1e6, 1)")
        note "1 client: $mbps MB/s"
        best_max "get1_mbps_$s" "$mbps"

        reset_hwm "$s"
        pids=$(server_pids "$s")
        c0=$(cpu_ticks $pids)
        t0=$(now)
        cpids=()
        for c in $(seq 1 "$CLIENTS"); do
            curl -fsS -o /dev/null -w '%{size_download}\n' "$url" >"$T/get8.$c" &
            cpids+=($!)
        done
        for p in "${cpids[@]}"; do wait "$p" || die "$s: a parallel GET failed"; done
        t1=$(now)
        c1=$(cpu_ticks $pids)
        total=$(cat "$T"/get8.* | awk '{s+=$1} END {printf "%.0f\n", s}')
        rm -f "$T"/get8.*
        [[ $total == $((BLOB_BYTES * CLIENTS)) ]] || die "$s: $CLIENTS-client GET got $total bytes"
        mbps=$(calc "round($total / ($t1 - $t0) / 1e6, 1)")
        cpu=$(calc "round(($c1 - $c0) / $CLK_TCK / ($total / 1073741824), 4)")
        hwm=$(hwm_mib "$s")
        note "$CLIENTS clients: $mbps MB/s, $cpu CPU-s/GiB, peak RSS $hwm MiB"
        best_max "get8_mbps_$s" "$mbps"
        best_min "get8_cpu_per_gib_$s" "$cpu"
        best_max "get8_hwm_mib_$s" "$hwm"
    done
done

# --- 3./4. manifest GET and blob HEAD under oha -------------------------------------------------
OHA_JSON=(-j)
oha --help 2>&1 | grep -q -- '--output-format' && OHA_JSON=(--output-format json)
OHA_EXTRA=()
oha --help 2>&1 | grep -q -- '--no-tui' && OHA_EXTRA+=(--no-tui)

declare -A OHA_BEST=()
oha_run() { # key server method url [header]
    local key=$1 s=$2 method=$3 url=$4 pids c0 c1 out rps p50 p99 ok other errs
    local hdr=()
    [[ -n ${5:-} ]] && hdr=(-H "$5")
    step "$key: $method $url, $CONNS connections, ${SECONDS_PER_RUN}s ($s)"
    # Warm-up: connections, caches.
    oha "${OHA_EXTRA[@]}" "${OHA_JSON[@]}" -m "$method" "${hdr[@]}" -c "$CONNS" -n $((CONNS * 20)) "$url" >/dev/null 2>&1 || true
    pids=$(server_pids "$s")
    c0=$(cpu_ticks $pids)
    oha "${OHA_EXTRA[@]}" "${OHA_JSON[@]}" -m "$method" "${hdr[@]}" -c "$CONNS" -z "${SECONDS_PER_RUN}s" "$url" >"$T/oha.json" 2>"$T/oha.err" \
        || { cat "$T/oha.err" >&2; die "oha failed"; }
    c1=$(cpu_ticks $pids)
    read -r rps p50 p99 ok other errs < <(python3 "$HELPERS/oha_summary.py" <"$T/oha.json")
    ((other == 0 && errs == 0)) || warn "$s $key: $other non-2xx answers, $errs errors"
    ((ok > 0)) || die "$s $key: no successful request"
    local cpu_k
    cpu_k=$(calc "round(($c1 - $c0) / $CLK_TCK * 1000 / $ok * 1000, 2)")
    note "$rps req/s, p50 $p50 ms, p99 $p99 ms, $cpu_k CPU-ms per 1000 requests"
    # With BENCH_OHA_REPEAT > 1, the run with the most req/s is kept, with its own latencies.
    local cur=${OHA_BEST[${key}_rps_$s]:-}
    if [[ -z $cur ]] || python3 -c "import sys; sys.exit(0 if $rps > $cur else 1)"; then
        OHA_BEST[${key}_rps_$s]=$rps
        OHA_BEST[${key}_p50_$s]=$p50
        OHA_BEST[${key}_p99_$s]=$p99
        OHA_BEST[${key}_cpu_ms_per_k_$s]=$cpu_k
    fi
}

manifest_url() { # server reference
    if [[ $1 == nginx ]]; then echo "${URL[nginx]}/manifest.json"; else echo "${URL[$1]}/v2/$REPO/manifests/$2"; fi
}
for i in $(seq 1 "$OHA_REPEAT"); do
    for s in aerugo distribution nginx; do
        oha_run mtag "$s" GET "$(manifest_url "$s" latest)" "Accept: $MT"
    done
    for s in aerugo distribution nginx; do
        oha_run mdig "$s" GET "$(manifest_url "$s" "$MANIFEST_DIGEST")" "Accept: $MT"
    done
    for s in aerugo distribution nginx; do
        oha_run head "$s" HEAD "$(blob_url "$s")"
    done
done
for k in "${!OHA_BEST[@]}"; do record "$k" "${OHA_BEST[$k]}"; done

for s in aerugo distribution nginx; do
    kill -0 "${PID[$s]}" 2>/dev/null || die "$s died during the run (log: $T/$s.log)"
done
record aerugo_hwm_total_mib "$(awk '/^VmHWM:/ {printf "%.1f", $2/1024}' "/proc/${PID[aerugo]}/status")"
for k in "${!BEST[@]}"; do record "$k" "${BEST[$k]}"; done

# --- report -------------------------------------------------------------------------------------
echo "load:      $(uptime | sed 's/.*load average: //') (1/5/15 min) at end" >>"$T/machine.txt"
{
    echo '```'
    cat "$T/machine.txt"
    echo '```'
    echo
    python3 "$HELPERS/report.py" "$RESULTS"
} >"$T/report.md"
[[ -n "${BENCH_OUT:-}" ]] && cp "$T/report.md" "$BENCH_OUT"
echo
cat "$T/report.md"
