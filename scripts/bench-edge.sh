#!/usr/bin/env bash
# The Aerugo edge against the CNCF distribution registry in proxy mode and nginx, side by side
# on loopback, with the same upstream, in one run (issue 3, "Benchmark"). See docs/benchmarks.md
# ("Edge") for what it measures and the figures.
#
#   ./scripts/bench-edge.sh                                          # full size: 1 GiB blob
#   BENCH_BLOB_MIB=256 BENCH_REPEAT=1 BENCH_RSS_CLIENTS=64 ./scripts/bench-edge.sh   # quick check
#
# Servers, all on free loopback ports, data under a temporary directory:
#   upstream      docker-registry (filesystem storage, access log on), seeded by a normal push
#                 with a BENCH_BLOB_MIB blob and a BENCH_SMALL_MIB blob of random bytes
#   edge          aerugo edge --upstream <upstream>, a fresh --cache-dir for every cold pull
#   distribution  docker-registry with `proxy: remoteurl: <upstream>`, fresh storage for every
#                 cold pull
#   nginx         the same big blob as a static file, sendfile on
# The edge and nginx also listen with TLS (a self-signed P-256 certificate made here with
# openssl) for the warm runs over TLS, where neither can `sendfile`.
# Upstream blob GETs and the bytes they sent are read from the upstream's access log (one
# Apache "combined" line per finished request, with the body bytes written).
#
# Idempotent and offline once the packages are there: installs the missing Debian packages
# (docker-registry, nginx-light, curl, python3), builds `aerugo` in release, measures, prints
# the tables and stops everything on exit.
#
# Environment:
#   BENCH_BLOB_MIB=1024         the blob of the cold and warm pulls
#   BENCH_SMALL_MIB=64          the blob of the many-client RSS run
#   BENCH_REPEAT=3              cold single pulls and warm runs are repeated, best kept
#   BENCH_CONCURRENCY="16 32"   concurrent cold pulls whose upstream GETs are counted
#   BENCH_WARM_CLIENTS=8        concurrent warm pulls of the CPU-per-GiB figure
#   BENCH_RSS_CLIENTS=256       concurrent downloads of the RSS figure
#   BENCH_PIN=1                 pin the proxy under test (edge, distribution) to CPU 1 and
#                               everything else (upstream, nginx, clients, this script) to
#                               CPU 0: what each proxy does with a core to itself
#   BENCH_OUT=FILE              also write the Markdown report to FILE
#   BENCH_KEEP=1                keep the temporary directory (logs, data) for inspection
#   AERUGO_BIN=PATH             use this binary instead of building one
#   AERUGO_SKIP_INSTALL=1       never call apt-get
#   CARGO_TARGET_DIR            defaults to ~/.cache/aerugo-target
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
HELPERS=$ROOT/scripts/bench
# shellcheck source=bench/lib.sh
source "$HELPERS/lib.sh"

BLOB_MIB=${BENCH_BLOB_MIB:-1024}
SMALL_MIB=${BENCH_SMALL_MIB:-64}
REPEAT=${BENCH_REPEAT:-3}
CONCURRENCY=${BENCH_CONCURRENCY:-16 32}
WARM_CLIENTS=${BENCH_WARM_CLIENTS:-8}
RSS_CLIENTS=${BENCH_RSS_CLIENTS:-256}
export PATH="$HOME/.cargo/bin:$PATH"

# --- tools -------------------------------------------------------------------------------------
step "checking tools"
install_debs docker-registry nginx-light curl python3 openssl
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
DISTRIBUTION=$(command -v docker-registry || echo /usr/bin/docker-registry)
for t in curl python3 sha256sum openssl "$NGINX" "$DISTRIBUTION"; do
    command -v "$t" >/dev/null 2>&1 || die "$t is not installed"
done
build_aerugo
# The proxies' CPU when pinned (BENCH_PIN=1); everything this script starts inherits CPU 0.
pin_servers PROXY_CPU
# The many-client runs start one curl per client.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# --- temporary directory and cleanup -----------------------------------------------------------
T=$(mktemp -d "${TMPDIR:-/tmp}/aerugo-bench-edge.XXXXXX")
chmod 755 "$T"
RESULTS=$T/results.env
: >"$RESULTS"
declare -A PID=() URL=()
cleanup() {
    local rc=$? name p workers=()
    # Clients first, then each server the way `stop` does it (nginx's workers included).
    for p in $(jobs -p); do
        [[ " ${PID[*]} " == *" $p "* ]] || kill "$p" 2>/dev/null || true
    done
    [[ -n ${PID[nginx]:-} ]] && workers=($(pgrep -P "${PID[nginx]}" || true))
    for name in "${!PID[@]}"; do stop "$name"; done
    for p in "${workers[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ "${BENCH_KEEP:-0}" == 1 ]]; then echo "kept $T" >&2; else rm -rf "$T"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
record() { echo "$1=$2" >>"$RESULTS"; }

step "machine"
{
    machine_info
    if ((${#PROXY_CPU[@]})); then echo "pinned:    the proxy under test on CPU 1, everything else on CPU 0"; fi
} | tee "$T/machine.txt" >&2

# --- test data ---------------------------------------------------------------------------------
BLOB_BYTES=$((BLOB_MIB * 1048576))
SMALL_BYTES=$((SMALL_MIB * 1048576))
GIB=$(calc "$BLOB_BYTES / 1073741824")
mkdir -p "$T/www" "$T/nginx"
chmod 755 "$T/www"
step "generating ${BLOB_MIB} MiB and ${SMALL_MIB} MiB blobs from /dev/urandom"
BLOB=$T/www/blob.bin
SMALL=$T/small.bin
head -c "$BLOB_BYTES" /dev/urandom >"$BLOB"
head -c "$SMALL_BYTES" /dev/urandom >"$SMALL"
DIGEST=sha256:$(sha256sum "$BLOB" | cut -d' ' -f1)
SMALL_DIGEST=sha256:$(sha256sum "$SMALL" | cut -d' ' -f1)
note "big   $DIGEST"
note "small $SMALL_DIGEST"
REPO=bench/app
# How fast this disk takes the blob with an fdatasync: the edge fsyncs a filled blob before
# the last byte goes out; distribution's filesystem driver does not fsync.
dd_start=$(now)
dd if="$BLOB" of="$T/ddtest" bs=16M conv=fdatasync status=none
dd_end=$(now)
rm -f "$T/ddtest"
record disk_fdatasync_mbps "$(calc "round($BLOB_BYTES / ($dd_end - $dd_start) / 1e6)")"
record blob_mib "$BLOB_MIB"
record small_mib "$SMALL_MIB"
record repeat "$REPEAT"
record concurrency "${CONCURRENCY// /,}"
record warm_clients "$WARM_CLIENTS"
record rss_clients "$RSS_CLIENTS"

# --- servers -----------------------------------------------------------------------------------
for s in upstream edge distribution nginx; do URL[$s]=http://127.0.0.1:$(free_port); done
for s in edge nginx; do URL[$s-tls]=https://127.0.0.1:$(free_port); done
mkdir -p "$T/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 -keyout "$T/tls/key.pem" -out "$T/tls/cert.pem" 2>/dev/null ||
    die "openssl could not make the TLS certificate"
cat >"$T/edge.toml" <<EOF
[edge]
tls_listen_address = "${URL[edge-tls]#https://}"
tls_cert_path = "$T/tls/cert.pem"
tls_key_path = "$T/tls/key.pem"
EOF

cat >"$T/upstream.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $T/upstream-data
http:
  addr: ${URL[upstream]#http://}
EOF
# The pull-through proxy: same registry program, its own storage, the same upstream.
cat >"$T/distribution.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $T/distribution-data
http:
  addr: ${URL[distribution]#http://}
proxy:
  remoteurl: ${URL[upstream]}
EOF
# The pulls' curl trusts it; HTTP/1.1 over TLS too, as over plain HTTP (both servers offer h2).
PULL_TLS=(--cacert "$T/tls/cert.pem" --http1.1)
write_nginx_conf "$T/nginx/nginx.conf" "$T/nginx" "${URL[nginx]#http://}" "$T/www" "" "
    server {
        listen ${URL[nginx-tls]#https://} ssl;
        ssl_protocols TLSv1.3;
        ssl_certificate $T/tls/cert.pem;
        ssl_certificate_key $T/tls/key.pem;
        root $T/www;
    }"

start() {
    case $1 in
        upstream)
            # Its stdout is the access log the upstream counts come from.
            "$DISTRIBUTION" serve "$T/upstream.yml" >"$T/upstream.log" 2>"$T/upstream.err" &
            PID[upstream]=$!
            wait_ready upstream "${PID[upstream]}" "${URL[upstream]}/v2/" "$T/upstream.err"
            ;;
        edge)
            (cd "$T" && exec "${PROXY_CPU[@]}" env -u AERUGO_CONFIG LOG_LEVEL=warn "$AERUGO_BIN" edge \
                --config "$T/edge.toml" --listen "${URL[edge]#http://}" --cache-dir "$T/edge-cache" \
                --upstream "${URL[upstream]}" >>"$T/edge.log" 2>&1) &
            PID[edge]=$!
            wait_ready edge "${PID[edge]}" "${URL[edge]}/healthz" "$T/edge.log"
            ;;
        distribution)
            "${PROXY_CPU[@]}" "$DISTRIBUTION" serve "$T/distribution.yml" >>"$T/distribution.log" 2>&1 &
            PID[distribution]=$!
            wait_ready distribution "${PID[distribution]}" "${URL[distribution]}/v2/" "$T/distribution.log"
            ;;
        nginx)
            "$NGINX" -p "$T/nginx" -e "$T/nginx/error.log" -c "$T/nginx/nginx.conf" >"$T/nginx.log" 2>&1 &
            PID[nginx]=$!
            wait_ready nginx "${PID[nginx]}" "${URL[nginx]}/blob.bin" "$T/nginx.log"
            ;;
    esac
}
stop() {
    # The edge: SIGINT is pingora's fast shutdown (SIGTERM waits grace_period_seconds).
    local sig=TERM
    [[ $1 == edge ]] && sig=INT
    stop_pid "${PID[$1]:-}" "$sig" 10
    PID[$1]=""
}
# A cold pull needs a proxy that holds nothing: stop, wipe its storage, start.
fresh() {
    stop "$1"
    case $1 in
        edge) rm -rf "${T:?}/edge-cache" ;;
        distribution) rm -rf "${T:?}/distribution-data" ;;
    esac
    sync
    start "$1"
}
pids_of() { # server (a TLS listener counts as its server)
    case $1 in
        nginx | nginx-tls) tree_pids "${PID[nginx]}" ;;
        *) echo "${PID[${1%-tls}]}" ;;
    esac
}

step "starting the upstream and seeding it"
start upstream
push_blob() { # file digest
    local loc code
    loc=$(curl -fsS -o /dev/null -D - -X POST "${URL[upstream]}/v2/$REPO/blobs/uploads/" |
        tr -d '\r' | awk 'tolower($1)=="location:" {print $2}')
    [[ -n $loc ]] || die "the upstream gave no upload location"
    [[ $loc == /* ]] && loc=${URL[upstream]}$loc
    if [[ $loc == *\?* ]]; then loc="$loc&digest=$2"; else loc="$loc?digest=$2"; fi
    code=$(curl -sS -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: application/octet-stream' \
        -H 'Expect:' -H 'Transfer-Encoding:' -H "Content-Length: $(stat -c %s "$1")" -T - "$loc" <"$1")
    [[ $code == 201 ]] || die "pushing $2 to the upstream answered $code"
}
push_blob "$BLOB" "$DIGEST"
push_blob "$SMALL" "$SMALL_DIGEST"
# A manifest too, so that the repository is a pullable image.
CONFIG='{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["'$DIGEST'","'$SMALL_DIGEST'"]}}'
printf '%s' "$CONFIG" >"$T/config.json"
CONFIG_DIGEST=sha256:$(sha256sum "$T/config.json" | cut -d' ' -f1)
push_blob "$T/config.json" "$CONFIG_DIGEST"
MT=application/vnd.oci.image.manifest.v1+json
LT=application/vnd.oci.image.layer.v1.tar
printf '%s' '{"schemaVersion":2,"mediaType":"'$MT'","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"'$CONFIG_DIGEST'","size":'$(stat -c %s "$T/config.json")'},"layers":[{"mediaType":"'$LT'","digest":"'$DIGEST'","size":'$BLOB_BYTES'},{"mediaType":"'$LT'","digest":"'$SMALL_DIGEST'","size":'$SMALL_BYTES'}]}' >"$T/manifest.json"
code=$(curl -sS -o /dev/null -w '%{http_code}' -X PUT -H "Content-Type: $MT" --data-binary @"$T/manifest.json" \
    "${URL[upstream]}/v2/$REPO/manifests/latest")
[[ $code == 201 ]] || die "pushing the manifest to the upstream answered $code"
grep -q '"GET /v2/ HTTP' "$T/upstream.log" || die "the upstream writes no access log to stdout (see $T/upstream.log)"

step "starting the edge, the distribution proxy and nginx"
start nginx
start edge
start distribution
for s in upstream edge distribution nginx; do note "$s: ${URL[$s]} (pid ${PID[$s]})"; done

blob_url() { # server [digest]
    local d=${2:-$DIGEST}
    case $1 in
        nginx | nginx-tls) echo "${URL[$1]}/blob.bin" ;;
        *) echo "${URL[$1]}/v2/$REPO/blobs/$d" ;;
    esac
}

# --- upstream accounting -----------------------------------------------------------------------
log_mark() { wc -l <"$T/upstream.log"; }
# "GETs bytes HEADs others" of the upstream's requests since `mark` for blob `digest`.
upstream_since() { # mark [digest]
    local d=${2:-$DIGEST}
    tail -n +$(($1 + 1)) "$T/upstream.log" | awk -v p="/v2/$REPO/blobs/$d" '
        $7 == p && $6 == "\"GET"  { g++; b += $10; next }
        $7 == p && $6 == "\"HEAD" { h++; next }
        $6 ~ /^"/                 { o++ }
        END { print g+0, b+0, h+0, o+0 }'
}
# Waits until the upstream has finished every request a cold pull caused: distribution's proxy
# keeps fetching into its storage after its clients are served. Stable for 1.5 s = done.
settle() { # mark proxy
    local last="" cur i data hex=${DIGEST#sha256:}
    if [[ $2 == distribution ]]; then
        data=$T/distribution-data/docker/registry/v2/blobs/sha256/${hex:0:2}/$hex/data
        for i in $(seq 1 1200); do
            [[ -f $data && $(stat -c %s "$data") == "$BLOB_BYTES" ]] && break
            sleep 0.1
        done
    fi
    for i in $(seq 1 600); do
        cur=$(upstream_since "$1")
        [[ $cur == "$last" ]] && break
        last=$cur
        sleep 1.5
    done
}
edge_metric() { # metric-name [label filter]
    curl -fsS "${URL[edge]}/metrics" | awk -v m="$1" -v f="${2:-}" '
        index($0, m) == 1 && (f == "" || index($0, f)) { s += $NF } END { print s+0 }'
}

# --- pulls -------------------------------------------------------------------------------------
# One pull: "bytes seconds cache-header" (x-aerugo-cache, or - when absent).
pull_one() { # url
    local out cache
    out=$(curl "${PULL_TLS[@]}" -fsS -o /dev/null -D "$T/pull.h" -w '%{size_download} %{time_total}' "$1") || die "GET $1 failed"
    cache=$(tr -d '\r' <"$T/pull.h" | awk 'tolower($1)=="x-aerugo-cache:" {print $2}')
    echo "$out ${cache:--}"
}
# N concurrent pulls: "total-bytes wall-seconds misses hits failures".
pull_many() { # n url
    local n=$1 url=$2 c t0 t1 fails=0
    local cpids=()
    rm -f "$T"/many.*
    t0=$(now)
    for c in $(seq 1 "$n"); do
        curl "${PULL_TLS[@]}" -sS -o /dev/null -D "$T/many.$c.h" -w '%{size_download}\n' "$url" >"$T/many.$c.out" 2>"$T/many.$c.err" &
        cpids+=($!)
    done
    for c in "${cpids[@]}"; do wait "$c" || fails=$((fails + 1)); done
    t1=$(now)
    local total misses hits
    total=$(cat "$T"/many.*.out | awk '{s+=$1} END {printf "%.0f\n", s}')
    misses=$(cat "$T"/many.*.h | tr -d '\r' | awk 'tolower($1)=="x-aerugo-cache:" && $2=="MISS"' | wc -l)
    hits=$(cat "$T"/many.*.h | tr -d '\r' | awk 'tolower($1)=="x-aerugo-cache:" && $2=="HIT"' | wc -l)
    echo "$total $(calc "$t1 - $t0") $misses $hits $fails"
}

declare -A BEST=()
best_max() { local cur=${BEST[$1]:-}; if [[ -z $cur ]] || python3 -c "import sys; sys.exit(0 if $2 > $cur else 1)"; then BEST[$1]=$2; fi; }
best_min() { local cur=${BEST[$1]:-}; if [[ -z $cur ]] || python3 -c "import sys; sys.exit(0 if $2 < $cur else 1)"; then BEST[$1]=$2; fi; }
mbps() { calc "round($1 / $2 / 1e6, 1)"; }

step "checking the bytes each server returns"
for s in upstream nginx; do
    got=$(curl -fsS "$(blob_url "$s")" | sha256sum | cut -d' ' -f1)
    [[ sha256:$got == "$DIGEST" ]] || die "$s returned other bytes for the blob"
done
# (The proxies are checked on their cold pulls below, by digest, then started afresh.)
for s in edge distribution; do
    got=$(curl -fsS "$(blob_url "$s")" | sha256sum | cut -d' ' -f1)
    [[ sha256:$got == "$DIGEST" ]] || die "$s returned other bytes for the blob"
done

# --- 1. cold single pulls, interleaved with direct pulls ---------------------------------------
# Each round pulls directly from the upstream, then through a fresh edge and a fresh
# distribution proxy, so that all three see the same background load; the best round is kept.
for i in $(seq 1 "$REPEAT"); do
    step "round $i/$REPEAT: direct pull from the upstream"
    u0=$(cpu_ticks "${PID[upstream]}")
    read -r bytes secs _ <<<"$(pull_one "$(blob_url upstream)")"
    u1=$(cpu_ticks "${PID[upstream]}")
    [[ $bytes == "$BLOB_BYTES" ]] || die "direct pull got $bytes bytes"
    v=$(mbps "$bytes" "$secs")
    note "$v MB/s; upstream $(calc "round(($u1 - $u0) / $CLK_TCK / $GIB, 3)") CPU-s/GiB"
    best_max direct_mbps "$v"
    best_min direct_upstream_cpu "$(calc "round(($u1 - $u0) / $CLK_TCK / $GIB, 3)")"
    step "round $i/$REPEAT: nginx pull (the file from the page cache)"
    read -r bytes secs _ <<<"$(pull_one "$(blob_url nginx)")"
    [[ $bytes == "$BLOB_BYTES" ]] || die "nginx pull got $bytes bytes"
    best_max nginx_mbps "$(mbps "$bytes" "$secs")"
    note "$(mbps "$bytes" "$secs") MB/s"

    for p in edge distribution; do
        step "round $i/$REPEAT: cold pull through the $p"
        fresh "$p"
        mark=$(log_mark)
        c0=$(cpu_ticks "${PID[$p]}")
        u0=$(cpu_ticks "${PID[upstream]}")
        read -r bytes secs cache <<<"$(pull_one "$(blob_url "$p")")"
        c1=$(cpu_ticks "${PID[$p]}")
        u1=$(cpu_ticks "${PID[upstream]}")
        [[ $bytes == "$BLOB_BYTES" ]] || die "$p cold pull got $bytes bytes"
        [[ $p != edge || $cache == MISS ]] || die "the edge's cold pull says x-aerugo-cache: $cache"
        hwm=$(hwm_mib "${PID[$p]}")
        settle "$mark" "$p"
        read -r gets up_bytes heads others <<<"$(upstream_since "$mark")"
        v=$(mbps "$bytes" "$secs")
        note "$v MB/s; $p $(calc "round(($c1 - $c0) / $CLK_TCK / $GIB, 3)") CPU-s/GiB, upstream $(calc "round(($u1 - $u0) / $CLK_TCK / $GIB, 3)") CPU-s/GiB during the pull"
        note "upstream: $gets blob GETs, $(calc "round($up_bytes / $BLOB_BYTES, 3)") copies, $heads HEADs, $others other requests; peak RSS $hwm MiB"
        best_max "cold_mbps_$p" "$v"
        best_min "cold_cpu_$p" "$(calc "round(($c1 - $c0) / $CLK_TCK / $GIB, 3)")"
        best_min "cold_upstream_cpu_$p" "$(calc "round(($u1 - $u0) / $CLK_TCK / $GIB, 3)")"
        # Counts: the worst round is kept.
        best_max "gets_1_$p" "$gets"
        best_max "copies_1_$p" "$(calc "round($up_bytes / $BLOB_BYTES, 3)")"
        best_max "heads_1_$p" "$heads"
        best_max "cold_hwm_1_$p" "$hwm"
        if [[ $p == edge ]]; then
            best_max edge_fetch_metric_1 "$(edge_metric aerugo_edge_upstream_fetches_total 'kind="blob"')"
        fi
    done
done

# Where a cold pull's time goes: one more cold pull per proxy with a client that notes when the
# first byte, all but the last byte, and the last byte arrived (the edge holds the last byte
# back until the blob is verified and fsynced).
for p in edge distribution; do
    step "cold pull through the $p, timed by phase"
    fresh "$p"
    mark=$(log_mark)
    read -r bytes ttfb penult total <<<"$(python3 "$HELPERS/timed_get.py" "$(blob_url "$p")")"
    [[ $bytes == "$BLOB_BYTES" ]] || die "$p timed cold pull got $bytes bytes"
    settle "$mark" "$p"
    note "first byte ${ttfb}s, all but the last byte ${penult}s, complete ${total}s"
    record "phase_ttfb_$p" "$ttfb"
    record "phase_penult_$p" "$penult"
    record "phase_total_$p" "$total"
done

# --- 2. concurrent cold pulls: upstream GETs and bytes -----------------------------------------
for n in $CONCURRENCY; do
    for p in edge distribution; do
        step "$n concurrent cold pulls through the $p"
        fresh "$p"
        mark=$(log_mark)
        read -r total secs misses hits fails <<<"$(pull_many "$n" "$(blob_url "$p")")"
        ((fails == 0)) || { cat "$T"/many.*.err >&2; die "$p: $fails of $n cold pulls failed"; }
        [[ $total == $((BLOB_BYTES * n)) ]] || die "$p: $n cold pulls got $total bytes"
        hwm=$(hwm_mib "${PID[$p]}")
        settle "$mark" "$p"
        read -r gets up_bytes heads others <<<"$(upstream_since "$mark")"
        note "$(mbps "$total" "$secs") MB/s in all; upstream: $gets blob GETs, $(calc "round($up_bytes / $BLOB_BYTES, 3)") copies, $heads HEADs, $others other; peak RSS $hwm MiB"
        record "gets_${n}_$p" "$gets"
        record "copies_${n}_$p" "$(calc "round($up_bytes / $BLOB_BYTES, 3)")"
        record "heads_${n}_$p" "$heads"
        record "cold_many_mbps_${n}_$p" "$(mbps "$total" "$secs")"
        record "cold_hwm_${n}_$p" "$hwm"
        if [[ $p == edge ]]; then
            record "edge_misses_$n" "$misses"
            record "edge_fetch_metric_$n" "$(edge_metric aerugo_edge_upstream_fetches_total 'kind="blob"')"
            record "edge_coalesced_metric_$n" "$(edge_metric aerugo_edge_coalesced_waiters_total)"
            note "x-aerugo-cache: $misses MISS, $hits HIT; metrics: $(edge_metric aerugo_edge_upstream_fetches_total 'kind="blob"') upstream blob fetch(es), $(edge_metric aerugo_edge_coalesced_waiters_total) coalesced waiters"
        fi
    done
done

# --- 3. warm serving: CPU seconds per GiB ------------------------------------------------------
step "warming the proxies (both blobs) and checking they are served locally"
for p in edge distribution; do
    for d in "$DIGEST" "$SMALL_DIGEST"; do
        got=$(curl -fsS "$(blob_url "$p" "$d")" | sha256sum | cut -d' ' -f1)
        [[ sha256:$got == "$d" ]] || die "$p returned other bytes for $d"
    done
done
for s in edge-tls nginx-tls; do
    got=$(curl "${PULL_TLS[@]}" -fsS "$(blob_url "$s")" | sha256sum | cut -d' ' -f1)
    [[ sha256:$got == "$DIGEST" ]] || die "$s returned other bytes for the blob"
done
settle "$(log_mark)" distribution
mark=$(log_mark)
read -r _ _ cache <<<"$(pull_one "$(blob_url edge)")"
[[ $cache == HIT ]] || die "the edge's warm pull says x-aerugo-cache: $cache"
# One warm round over `servers`: a single pull (MB/s), then WARM_CLIENTS concurrent pulls
# (MB/s in all, the server's CPU-s per GiB sent); the best of the rounds is kept.
warm_runs() { # round server...
    local i=$1 s url bytes secs one pids c0 c1 total fails cpu
    shift
    for s in "$@"; do
        url=$(blob_url "$s")
        step "warm, $s, run $i/$REPEAT"
        read -r bytes secs _ <<<"$(pull_one "$url")"
        [[ $bytes == "$BLOB_BYTES" ]] || die "$s warm pull got $bytes bytes"
        one=$(mbps "$bytes" "$secs")
        best_max "warm_mbps_$s" "$one"
        pids=$(pids_of "$s")
        c0=$(cpu_ticks $pids)
        read -r total secs _ _ fails <<<"$(pull_many "$WARM_CLIENTS" "$url")"
        c1=$(cpu_ticks $pids)
        ((fails == 0)) || die "$s: $fails warm pulls failed"
        [[ $total == $((BLOB_BYTES * WARM_CLIENTS)) ]] || die "$s: $WARM_CLIENTS warm pulls got $total bytes"
        cpu=$(calc "round(($c1 - $c0) / $CLK_TCK / ($total / 1073741824), 4)")
        note "1 client $one MB/s; $WARM_CLIENTS clients $(mbps "$total" "$secs") MB/s, $cpu CPU-s/GiB"
        best_max "warm_many_mbps_$s" "$(mbps "$total" "$secs")"
        best_min "warm_cpu_$s" "$cpu"
    done
}
for i in $(seq 1 "$REPEAT"); do
    warm_runs "$i" edge distribution nginx
done
# The same over TLS (HTTP/1.1, one connection per client): the edge's TLS listener and nginx's,
# where neither can `sendfile`; the suite each negotiated is recorded.
for s in edge-tls nginx-tls; do
    suite=$(openssl s_client -connect "${URL[$s]#https://}" -CAfile "$T/tls/cert.pem" </dev/null 2>/dev/null |
        awk '/Cipher is/ {print $NF; exit}')
    record "tls_suite_${s%-tls}" "${suite:-?}"
done
for i in $(seq 1 "$REPEAT"); do
    warm_runs "$i" edge-tls nginx-tls
done
read -r gets _ heads _ <<<"$(upstream_since "$mark")"
record warm_upstream_gets "$gets"
note "upstream blob GETs during the warm runs: $gets"

# --- 4. peak RSS with many concurrent downloads of a warm blob ---------------------------------
for s in edge distribution nginx; do
    if [[ $s == nginx ]]; then url=${URL[nginx]}/small.bin; cp "$SMALL" "$T/www/small.bin"; else url=$(blob_url "$s" "$SMALL_DIGEST"); fi
    step "$RSS_CLIENTS concurrent downloads of the ${SMALL_MIB} MiB blob, $s"
    pids=$(pids_of "$s")
    before=$(rss_mib $pids)
    reset_hwm $pids
    after_reset=$(hwm_mib $pids)
    read -r total secs misses hits fails <<<"$(pull_many "$RSS_CLIENTS" "$url")"
    ((fails == 0)) || { head -3 "$T"/many.*.err >&2; die "$s: $fails of $RSS_CLIENTS downloads failed"; }
    [[ $total == $((SMALL_BYTES * RSS_CLIENTS)) ]] || die "$s: $RSS_CLIENTS downloads got $total bytes"
    [[ $s != edge || $hits == "$RSS_CLIENTS" ]] || die "the edge served $misses of the $RSS_CLIENTS downloads as misses"
    peak=$(hwm_mib $pids)
    if python3 -c "import sys; sys.exit(0 if $after_reset > $before + 2 else 1)"; then
        warn "$s: clear_refs did not reset VmHWM ($after_reset MiB vs RSS $before MiB): the figure is the lifetime peak"
    fi
    note "RSS before $before MiB, peak $peak MiB; $(mbps "$total" "$secs") MB/s in all"
    record "rss_before_$s" "$before"
    record "rss_peak_$s" "$peak"
    record "rss_mbps_$s" "$(mbps "$total" "$secs")"
done

for s in upstream edge distribution nginx; do
    kill -0 "${PID[$s]}" 2>/dev/null || die "$s died during the run"
done
for k in "${!BEST[@]}"; do record "$k" "${BEST[$k]}"; done

# --- report ------------------------------------------------------------------------------------
echo "load:      $(uptime | sed 's/.*load average: //') (1/5/15 min) at end" >>"$T/machine.txt"
{
    echo '```'
    cat "$T/machine.txt"
    echo '```'
    echo
    python3 "$HELPERS/edge_report.py" "$RESULTS"
} >"$T/report.md"
[[ -n "${BENCH_OUT:-}" ]] && cp "$T/report.md" "$BENCH_OUT"
echo
cat "$T/report.md"
