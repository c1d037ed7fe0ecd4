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
#   BENCH_PIN=1           pin the servers under test (aerugo, distribution, nginx) to CPU 1 and
#                         the clients (curl, oha, python) to CPU 0: what each server does with one
#                         core to itself, where by default servers and clients share both
#   BENCH_OUT=FILE        also write the Markdown report to FILE
#   BENCH_KEEP=1          keep the temporary directory (logs, data) for inspection
#   AERUGO_BIN=PATH       use this binary instead of building one
#   AERUGO_SKIP_INSTALL=1 never call apt-get/cargo install
#   CARGO_TARGET_DIR      defaults to ~/.cache/aerugo-target
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
HELPERS=$ROOT/scripts/bench
# shellcheck source=bench/lib.sh
source "$HELPERS/lib.sh"

SECONDS_PER_RUN=${BENCH_SECONDS:-10}
BLOB_MIB=${BENCH_BLOB_MIB:-1024}
CHUNK_MIB=${BENCH_CHUNK_MIB:-16}
CLIENTS=${BENCH_CLIENTS:-8}
CONNS=${BENCH_CONNS:-64}
REPEAT=${BENCH_REPEAT:-3}
OHA_REPEAT=${BENCH_OHA_REPEAT:-1}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aerugo-target}"
export PATH="$HOME/.cargo/bin:$PATH"

# --- tools -----------------------------------------------------------------------------------
step "checking tools"
install_debs docker-registry nginx-light curl python3
if [[ "${AERUGO_SKIP_INSTALL:-0}" != 1 ]] && ! command -v oha >/dev/null 2>&1; then
    note "oha missing: cargo install oha --locked"
    cargo install oha --locked
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
DISTRIBUTION=$(command -v docker-registry || echo /usr/bin/docker-registry)
for t in curl python3 oha "$NGINX" "$DISTRIBUTION"; do
    command -v "$t" >/dev/null 2>&1 || die "$t is not installed"
done

# The servers' CPU when pinned (BENCH_PIN=1); everything else this script starts inherits CPU 0.
pin_servers SERVER_CPU

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
server_pids() {
    if [[ $1 == nginx ]]; then
        echo "${PID[nginx]}" $(pgrep -P "${PID[nginx]}" || true)
    else
        echo "${PID[$1]}"
    fi
}
# shellcheck disable=SC2046 # lists of pids
server_reset_hwm() { reset_hwm $(server_pids "$1"); }
# shellcheck disable=SC2046
server_hwm_mib() { hwm_mib $(server_pids "$1"); }
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
    echo "pinning:   $([[ ${#SERVER_CPU[@]} -gt 0 ]] && echo 'servers on CPU 1, clients on CPU 0 (BENCH_PIN=1)' || echo 'none')"
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

write_image "$T/config.json" "$T/www/manifest.json" "$DIGEST" "$BLOB_BYTES"
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

write_nginx_conf "$T/nginx/nginx.conf" "$T/nginx" "${URL[nginx]#http://}" "$T/www" \
    "location = /manifest.json { default_type $MT; }"

start() {
    case $1 in
        aerugo)
            (cd "$T" && exec "${SERVER_CPU[@]}" env -u AERUGO_CONFIG LOG_LEVEL=warn "$AERUGO_BIN" serve \
                --listen "${URL[aerugo]#http://}" --data-dir "$T/aerugo-data" >"$T/aerugo.log" 2>&1) &
            PID[aerugo]=$!
            wait_ready aerugo "${PID[aerugo]}" "${URL[aerugo]}/v2/" "$T/aerugo.log"
            ;;
        distribution)
            "${SERVER_CPU[@]}" "$DISTRIBUTION" serve "$T/distribution.yml" >"$T/distribution.log" 2>&1 &
            PID[distribution]=$!
            wait_ready distribution "${PID[distribution]}" "${URL[distribution]}/v2/" "$T/distribution.log"
            ;;
        nginx)
            "${SERVER_CPU[@]}" "$NGINX" -p "$T/nginx" -e "$T/nginx/error.log" -c "$T/nginx/nginx.conf" >"$T/nginx.log" 2>&1 &
            PID[nginx]=$!
            wait_ready nginx "${PID[nginx]}" "${URL[nginx]}/manifest.json" "$T/nginx.log"
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

# Monolithic push (push_mono in scripts/bench/lib.sh): the comparable form is POST then one
# PUT with the whole body, since distribution 2.8 ignores the body of a single POST ?digest=.
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
                out=$(push_mono "${URL[$r]}" "$REPO" "$mode" "$BLOB" "$DIGEST") || true
                children_cpu k1
                read -r status secs <<<"$out"
                client_cpu=$(calc "$k1 - $k0")
            else
                out=$(python3 "$HELPERS/push_chunked.py" "${URL[$r]}" "$REPO" "$BLOB" "$DIGEST" $((CHUNK_MIB * 1048576))) || true
                read -r status _bytes secs client_cpu retries <<<"$out"
                [[ ${retries:-0} == 0 ]] || warn "$r: $retries chunked-push requests retried after 400 'another request is writing'"
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
for r in aerugo distribution; do push_image "${URL[$r]}" "$REPO" "$T/config.json" "$T/www/manifest.json" latest; done

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

        server_reset_hwm "$s"
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
        hwm=$(server_hwm_mib "$s")
        note "$CLIENTS clients: $mbps MB/s, $cpu CPU-s/GiB, peak RSS $hwm MiB"
        best_max "get8_mbps_$s" "$mbps"
        best_min "get8_cpu_per_gib_$s" "$cpu"
        best_max "get8_hwm_mib_$s" "$hwm"
    done
done

# --- 3./4. manifest GET and blob HEAD under oha -------------------------------------------------
oha_setup
declare -A OHA_BEST=()
oha_run() { # key server method url [header]
    local key=$1 s=$2 rps p50 p99 ok other errs cpu_k
    step "$key: $3 $4, $CONNS connections, ${SECONDS_PER_RUN}s ($s)"
    read -r rps p50 p99 ok other errs cpu_k < <(oha_measure "$(server_pids "$s")" "$CONNS" "$SECONDS_PER_RUN" "$3" "$4" "${5:-}")
    [[ -n ${rps:-} ]] || die "$s $key: oha measured nothing"
    ((other == 0 && errs == 0)) || warn "$s $key: $other non-2xx answers, $errs errors"
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
