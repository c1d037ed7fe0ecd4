#!/usr/bin/env bash
# Aerugo on its production stack (PostgreSQL metadata, S3 blobs, Redis cache) against the CNCF
# distribution registry on its S3 driver, both on the same S3 server (separate buckets), in one
# run (issue 7, "Benchmark"). See docs/benchmarks.md ("Production stack") for the figures.
#
#   ./scripts/bench-cluster.sh                                               # full size: 1 GiB
#   BENCH_BLOB_MIB=128 BENCH_SECONDS=3 BENCH_REPEAT=1 ./scripts/bench-cluster.sh   # quick check
#
# Services: PostgreSQL, Redis and s3s-fs at the addresses of scripts/services.sh, which is run
# first (it leaves running services alone). The run makes its own database, two buckets, a Redis
# key prefix (Aerugo) and takes an empty Redis database number (distribution, which has no key
# prefix); all are removed on exit.
#
# Rows: push 1 blob monolithic and chunked; pull it with redirects on (curl follows the 307 to
# the object store; timed end to end) and off; manifest GET and blob HEAD under oha with Redis
# on and off; node and s3s-fs CPU seconds per GiB (utime+stime from /proc/<pid>/stat).
#
# Environment (besides those of scripts/bench.sh: BENCH_SECONDS, BENCH_BLOB_MIB, BENCH_CHUNK_MIB,
# BENCH_CONNS, BENCH_REPEAT, BENCH_OHA_REPEAT, BENCH_OUT, BENCH_KEEP, AERUGO_BIN,
# AERUGO_SKIP_INSTALL, CARGO_TARGET_DIR):
#   BENCH_S3_ENDPOINT=http://127.0.0.1:9100   BENCH_S3_ACCESS_KEY=aerugo
#   BENCH_S3_SECRET_KEY=aerugo-secret         BENCH_S3_REGION=us-east-1
#   BENCH_PG=postgres://aerugo:aerugo@127.0.0.1:5432   (a superuser: the run creates a database)
#   BENCH_REDIS=127.0.0.1:6379
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
HELPERS=$ROOT/scripts/bench
# shellcheck source=bench/lib.sh
source "$HELPERS/lib.sh"

SECONDS_PER_RUN=${BENCH_SECONDS:-10}
BLOB_MIB=${BENCH_BLOB_MIB:-1024}
CHUNK_MIB=${BENCH_CHUNK_MIB:-16}
CONNS=${BENCH_CONNS:-64}
REPEAT=${BENCH_REPEAT:-3}
OHA_REPEAT=${BENCH_OHA_REPEAT:-1}
production_services
export PATH="$HOME/.cargo/bin:$PATH"
REGISTRIES=(aerugo distribution)

# --- tools and services ------------------------------------------------------------------------
step "checking tools and services"
# psql and redis-cli come with the services (scripts/services.sh installs them).
install_debs docker-registry nginx-light curl python3
if [[ "${AERUGO_SKIP_INSTALL:-0}" != 1 ]] && ! command -v oha >/dev/null 2>&1; then
    note "oha missing: cargo install oha --locked"
    cargo install oha --locked
fi
DISTRIBUTION=$(command -v docker-registry || echo /usr/bin/docker-registry)
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
for t in curl python3 oha psql redis-cli ss "$DISTRIBUTION" "$NGINX"; do
    command -v "$t" >/dev/null 2>&1 || die "$t is not installed"
done
scripts/services.sh >&2
build_aerugo
oha_setup

# --- names of this run, cleanup --------------------------------------------------------------
T=$(mktemp -d "${TMPDIR:-/tmp}/aerugo-bench-cluster.XXXXXX")
RUN=$(basename "$T" | tr 'A-Z.' 'a-z-')
# Short bucket names: s3s-fs names its metadata files after the base64 of bucket and key, and
# distribution's keys are long enough to hit the 255-byte file-name limit with a long bucket.
SUFFIX=${RUN##*-}
declare -A BUCKET=([aerugo]="bc-$SUFFIX-a" [distribution]="bc-$SUFFIX-d")
DB=$(echo "$RUN" | tr -- - _)
PREFIX="$RUN:"
REDIS_HOST=${REDIS%:*}
REDIS_PORT=${REDIS##*:}
rcli() { redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" "$@"; }

# distribution 2.8 has no Redis key prefix: it gets a database number of its own, one that is
# empty now (its keys are "blobs::…" and "repository::…").
DIST_REDIS_DB=""
for n in 15 14 13 12 11 10 9 8; do
    if [[ $(rcli -n "$n" dbsize) == 0 ]]; then DIST_REDIS_DB=$n; break; fi
done
[[ -n $DIST_REDIS_DB ]] || die "no empty Redis database among 8..15 for distribution"

# Removes the keys of one registry from Redis.
redis_purge() { # registry
    local db=0 pattern="$PREFIX*"
    [[ $1 == distribution ]] && db=$DIST_REDIS_DB pattern='*'
    rcli -n "$db" --scan --pattern "$pattern" | while read -r k; do rcli -n "$db" unlink "$k" >/dev/null; done
}

declare -A PID=()
cleanup() {
    local rc=$? r
    for r in "${REGISTRIES[@]}"; do stop_pid "${PID[$r]:-}"; done
    stop_pid "${PID[front]:-}"
    stop_pid "${PID[shim]:-}"
    for r in "${REGISTRIES[@]}"; do
        s3 purge "${BUCKET[$r]}" || warn "bucket ${BUCKET[$r]} not removed"
        redis_purge "$r" || warn "Redis keys of $r not removed"
    done
    psql_admin -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || warn "database $DB not dropped"
    if [[ "${BENCH_KEEP:-0}" == 1 ]]; then echo "kept $T" >&2; else rm -rf "$T"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

RESULTS=$T/results.env
: >"$RESULTS"
record() { echo "$1=$2" >>"$RESULTS"; }
declare -A BEST=()
best_max() { local cur=${BEST[$1]:-}; if [[ -z $cur ]] || python3 -c "import sys; sys.exit(0 if $2 > $cur else 1)"; then BEST[$1]=$2; fi; }
best_min() { local cur=${BEST[$1]:-}; if [[ -z $cur ]] || python3 -c "import sys; sys.exit(0 if $2 < $cur else 1)"; then BEST[$1]=$2; fi; }

# The process listening on a loopback port (s3s-fs), for its CPU figures; empty if not found.
listener_pid() { ss -ltnpH "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2; }
S3_HOSTPORT=$(python3 -c "import urllib.parse,sys; u=urllib.parse.urlsplit(sys.argv[1]); print(f'{u.hostname}:{u.port or 80}')" "$S3_ENDPOINT")
S3_PID=$(listener_pid "${S3_HOSTPORT##*:}")
[[ -n $S3_PID ]] || warn "no process found listening for $S3_ENDPOINT: no s3s-fs CPU figures"

# The S3 front both registries talk to: nginx proxying to s3s-fs, except the multipart-upload
# bookkeeping, which goes to scripts/bench/s3_uploads_shim.py (s3s-fs 0.14 has no
# ListMultipartUploads, without which distribution 2.8 cannot push). Blob bytes pass through
# nginx only (no buffering), never through the shim.
start_front() {
    local shim_port front_port
    shim_port=$(free_port)
    front_port=$(free_port)
    mkdir -p "$T/front"
    python3 "$HELPERS/s3_uploads_shim.py" "$shim_port" "$S3_HOSTPORT" >"$T/shim.log" 2>&1 &
    PID[shim]=$!
    # shellcheck disable=SC2016 # nginx variables, not the shell's
    write_nginx_conf "$T/front/nginx.conf" "$T/front" "127.0.0.1:$front_port" "$T/front" '
        client_max_body_size 0;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $http_host;
        proxy_request_buffering off;
        proxy_buffering off;
        proxy_read_timeout 600s;
        proxy_send_timeout 600s;
        location / { proxy_pass http://$s3_backend; }' "
    upstream s3 { server $S3_HOSTPORT; keepalive 64; }
    upstream shim { server 127.0.0.1:$shim_port; }
    map \"\$request_method \$args\" \$s3_backend {
        default s3;
        \"~^(POST|GET) (.*&)?uploads(=[^&]*)?(&|\$)\" shim;
        \"~^(POST|DELETE|GET) (.*&)?uploadId=\" shim;
    }"
    "$NGINX" -p "$T/front" -e "$T/front/error.log" -c "$T/front/nginx.conf" >"$T/front.log" 2>&1 &
    PID[front]=$!
    FRONT=http://127.0.0.1:$front_port
    # s3s-fs answers 403 to an unsigned request: any answer means the chain is up.
    local i
    for i in $(seq 1 100); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' "$FRONT/") != 000 ]] && return 0
        sleep 0.1
    done
    die "the S3 front on $FRONT does not answer (logs: $T/front/error.log, $T/shim.log)"
}
start_front
# CPU of the object store side: s3s-fs, and the front (nginx master and workers).
front_pids() { tree_pids "${PID[front]}"; }

# --- machine, test data -------------------------------------------------------------------------
step "machine"
{
    machine_info
    echo "s3 front:  $FRONT (nginx, multipart bookkeeping to scripts/bench/s3_uploads_shim.py)"
    echo "s3:        $S3_ENDPOINT ($([[ -n $S3_PID ]] && basename "$(readlink "/proc/$S3_PID/exe")" || echo '?'), pid ${S3_PID:-?})"
    echo "postgres:  $(psql -X -tA "$PG/postgres" -c 'SHOW server_version')"
    echo "redis:     $(rcli info server | awk -F: '/^redis_version/ {print $2}' | tr -d '\r')"
    echo "oha:       $(oha --version 2>/dev/null)"
} | tee "$T/machine.txt" >&2

step "generating a ${BLOB_MIB} MiB blob from /dev/urandom"
BLOB=$T/blob.bin
BLOB_BYTES=$((BLOB_MIB * 1048576))
GIB=$(calc "$BLOB_BYTES / 1073741824")
# The blob file, Aerugo's copy and distribution's (upload, then a multipart copy to its final
# key: twice for a while): about 5× the blob on this disk when s3s-fs keeps its data here too.
avail=$(($(df --output=avail -k "$T" | tail -1) * 1024))
((avail >= 5 * BLOB_BYTES)) || warn "only $((avail >> 20)) MiB free under $T; the run may need $((5 * BLOB_BYTES >> 20)) MiB (s3s-fs answers 500 when its disk is full)"
head -c "$BLOB_BYTES" /dev/urandom >"$BLOB"
DIGEST=sha256:$(sha256sum "$BLOB" | cut -d' ' -f1)
write_image "$T/config.json" "$T/manifest.json" "$DIGEST" "$BLOB_BYTES"
REPO=bench/app
note "digest $DIGEST"
for k in blob_mib:$BLOB_MIB chunk_mib:$CHUNK_MIB manifest_bytes:$MANIFEST_BYTES seconds:$SECONDS_PER_RUN \
    repeat:$REPEAT oha_repeat:$OHA_REPEAT conns:$CONNS; do record "${k%%:*}" "${k#*:}"; done

# --- servers ---------------------------------------------------------------------------------------
declare -A URL=([aerugo]=http://127.0.0.1:$(free_port) [distribution]=http://127.0.0.1:$(free_port))
mkdir -p "$T/aerugo-data"

# Aerugo's production configuration (config/cluster.toml's keys) for `redirect` and `cache`.
write_aerugo_conf() { # redirect(true|false) cache(redis|memory)
    cat >"$T/aerugo.toml" <<EOF
[server]
listen_address = "${URL[aerugo]#http://}"
data_dir = "$T/aerugo-data"

[storage]
type = "s3"
bucket = "${BUCKET[aerugo]}"
region = "$S3_REGION_NAME"
endpoint = "$FRONT"
path_style = true
access_key = "$S3_KEY"
secret_key = "$S3_SECRET"
redirect = $1

[database]
url = "$PG/$DB"
migrate = true

[cache]
type = "$2"
$(if [[ $2 == redis ]]; then echo "redis_url = \"redis://$REDIS/0\""; fi)
redis_key_prefix = "$PREFIX"
EOF
}

# distribution 2.8's s3-aws driver (path-style is implied by regionendpoint in 2.8).
write_distribution_conf() { # redirect(true|false) cache(redis|memory)
    local disable=true cache=inmemory
    [[ $1 == true ]] && disable=false
    [[ $2 == redis ]] && cache=redis
    cat >"$T/distribution.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  s3:
    accesskey: $S3_KEY
    secretkey: $S3_SECRET
    region: $S3_REGION_NAME
    regionendpoint: $FRONT
    bucket: ${BUCKET[distribution]}
    secure: false
    v4auth: true
    rootdirectory: /
  delete:
    enabled: true
  redirect:
    disable: $disable
  cache:
    blobdescriptor: $cache
redis:
  addr: $REDIS
  db: $DIST_REDIS_DB
http:
  addr: ${URL[distribution]#http://}
EOF
}

start() { # registry redirect cache
    local r=$1
    "write_${r}_conf" "$2" "$3"
    case $r in
        aerugo)
            (cd "$T" && exec env -u AERUGO_CONFIG -u DATABASE_URL -u REDIS_URL -u S3_BUCKET -u S3_ENDPOINT \
                -u S3_REGION -u S3_ACCESS_KEY -u S3_SECRET_KEY -u AWS_CA_BUNDLE LOG_LEVEL=warn \
                "$AERUGO_BIN" serve --config "$T/aerugo.toml" >>"$T/aerugo.log" 2>&1) &
            ;;
        distribution)
            # AWS_CA_BUNDLE (set on some machines) makes the 2.8 driver panic at start-up:
            # "LoadCustomCABundleError … unsupported transport"; the store is plain HTTP anyway.
            env -u AWS_CA_BUNDLE "$DISTRIBUTION" serve "$T/distribution.yml" >>"$T/distribution.log" 2>&1 &
            ;;
    esac
    PID[$r]=$!
    wait_ready "$r" "${PID[$r]}" "${URL[$r]}/v2/" "$T/$r.log"
}
stop() { stop_pid "${PID[$1]:-}"; PID[$1]=""; }
restart_all() { # redirect cache
    local r
    for r in "${REGISTRIES[@]}"; do stop "$r"; start "$r" "$@"; done
    note "redirect=$1 cache=$2: $(for r in "${REGISTRIES[@]}"; do printf '%s pid %s; ' "$r" "${PID[$r]}"; done)"
}
# A push measures a registry that holds nothing yet: empty bucket, database and cache keys.
fresh() { # registry
    stop "$1"
    s3 purge "${BUCKET[$1]}"
    s3 create "${BUCKET[$1]}"
    redis_purge "$1"
    if [[ $1 == aerugo ]]; then
        psql_admin -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
    fi
    sync
    start "$1" true redis
}

# CPU ticks of a registry, of s3s-fs and of the S3 front: "node s3 front".
# shellcheck disable=SC2046,SC2086 # lists of pids
cpu_triple() { echo "$(cpu_ticks "${PID[$1]}") $(cpu_ticks $S3_PID) $(cpu_ticks $(front_pids))"; }
per_gib() { calc "round(($2 - $1) / $CLK_TCK / $GIB, 3)"; } # ticks_before ticks_after

# --- 1. pushes (redirects on, Redis on) ------------------------------------------------------------
# Interleaved (run i of every mode on every registry before run i+1), best kept.
for i in $(seq 1 "$REPEAT"); do
    for mode in put chunked; do
        for r in "${REGISTRIES[@]}"; do
            fresh "$r"
            step "push $mode, $r, run $i/$REPEAT"
            read -r n0 s0 f0 <<<"$(cpu_triple "$r")"
            if [[ $mode == put ]]; then
                out=$(push_mono "${URL[$r]}" "$REPO" put "$BLOB" "$DIGEST") || true
                read -r status secs <<<"$out"
            else
                out=$(python3 "$HELPERS/push_chunked.py" "${URL[$r]}" "$REPO" "$BLOB" "$DIGEST" $((CHUNK_MIB * 1048576))) || true
                read -r status _bytes secs _client retries <<<"$out"
                [[ ${retries:-0} == 0 ]] || warn "$r: $retries requests retried after 400 'another request is writing to this upload session'"
                best_max "push_chunked_retries_$r" "${retries:-0}"
            fi
            read -r n1 s1 f1 <<<"$(cpu_triple "$r")"
            [[ ${status:-} == 201 ]] || die "push $mode to $r answered '${out:-nothing}' (log: $T/$r.log)"
            mbps=$(calc "round($BLOB_BYTES / $secs / 1e6, 1)")
            note "$mbps MB/s in $(calc "round($secs, 2)") s; node $(per_gib "$n0" "$n1") CPU-s/GiB, s3s-fs $(per_gib "$s0" "$s1"), front $(per_gib "$f0" "$f1") CPU-s/GiB"
            best_max "push_${mode}_mbps_$r" "$mbps"
            best_min "push_${mode}_cpu_per_gib_$r" "$(per_gib "$n0" "$n1")"
            best_min "push_${mode}_s3_cpu_per_gib_$r" "$(per_gib "$s0" "$s1")"
            best_min "push_${mode}_front_cpu_per_gib_$r" "$(per_gib "$f0" "$f1")"
        done
    done
done

step "pushing the manifest"
for r in "${REGISTRIES[@]}"; do push_image "${URL[$r]}" "$REPO" "$T/config.json" "$T/manifest.json" latest; done

# --- 2. pulls, redirects on and off (Redis on) -----------------------------------------------------
pull() { # key redirect
    local key=$1 expect_redirects=0 r out bytes secs hops n0 s0 f0 n1 s1 f1 got
    [[ $2 == true ]] && expect_redirects=1
    restart_all "$2" redis
    for r in "${REGISTRIES[@]}"; do
        got=$(curl -fsSL "${URL[$r]}/v2/$REPO/blobs/$DIGEST" | sha256sum | cut -d' ' -f1)
        [[ sha256:$got == "$DIGEST" ]] || die "$r (redirect=$2) returned other bytes for the blob"
    done
    for i in $(seq 1 "$REPEAT"); do
        for r in "${REGISTRIES[@]}"; do
            step "pull, redirect=$2, $r, run $i/$REPEAT"
            read -r n0 s0 f0 <<<"$(cpu_triple "$r")"
            out=$(curl -fsSL -o /dev/null -w '%{size_download} %{time_total} %{num_redirects}' "${URL[$r]}/v2/$REPO/blobs/$DIGEST")
            read -r n1 s1 f1 <<<"$(cpu_triple "$r")"
            read -r bytes secs hops <<<"$out"
            [[ $bytes == "$BLOB_BYTES" ]] || die "$r: pull got $bytes bytes"
            [[ $hops == "$expect_redirects" ]] || die "$r (redirect=$2): $hops redirects, expected $expect_redirects"
            mbps=$(calc "round($bytes / $secs / 1e6, 1)")
            note "$mbps MB/s; node $(per_gib "$n0" "$n1") CPU-s/GiB, s3s-fs $(per_gib "$s0" "$s1"), front $(per_gib "$f0" "$f1") CPU-s/GiB"
            best_max "${key}_mbps_$r" "$mbps"
            best_min "${key}_cpu_per_gib_$r" "$(per_gib "$n0" "$n1")"
            best_min "${key}_s3_cpu_per_gib_$r" "$(per_gib "$s0" "$s1")"
            best_min "${key}_front_cpu_per_gib_$r" "$(per_gib "$f0" "$f1")"
        done
    done
}
pull pull_redirect true
pull pull_direct false

# --- 3. manifest GET and blob HEAD under oha, Redis on and off (redirects off) ------------------
declare -A OHA_BEST=()
oha_run() { # key registry method url [header]
    local key=$1 r=$2 rps p50 p99 _ok other errs cpu_k cur
    step "$key: $3 $4, $CONNS connections, ${SECONDS_PER_RUN}s ($r)"
    read -r rps p50 p99 _ok other errs cpu_k < <(oha_measure "${PID[$r]}" "$CONNS" "$SECONDS_PER_RUN" "$3" "$4" "${5:-}")
    [[ -n ${rps:-} ]] || die "$r $key: oha measured nothing"
    ((other == 0 && errs == 0)) || warn "$r $key: $other non-2xx answers, $errs errors"
    note "$rps req/s, p50 $p50 ms, p99 $p99 ms, $cpu_k CPU-ms per 1000 requests"
    cur=${OHA_BEST[${key}_rps_$r]:-}
    if [[ -z $cur ]] || python3 -c "import sys; sys.exit(0 if $rps > $cur else 1)"; then
        OHA_BEST[${key}_rps_$r]=$rps
        OHA_BEST[${key}_p50_$r]=$p50
        OHA_BEST[${key}_p99_$r]=$p99
        OHA_BEST[${key}_cpu_ms_per_k_$r]=$cpu_k
    fi
}
for cache in redis memory; do
    restart_all false "$cache"
    for i in $(seq 1 "$OHA_REPEAT"); do
        for r in "${REGISTRIES[@]}"; do oha_run "mtag_$cache" "$r" GET "${URL[$r]}/v2/$REPO/manifests/latest" "Accept: $MT"; done
        for r in "${REGISTRIES[@]}"; do oha_run "mdig_$cache" "$r" GET "${URL[$r]}/v2/$REPO/manifests/$MANIFEST_DIGEST" "Accept: $MT"; done
        for r in "${REGISTRIES[@]}"; do oha_run "head_$cache" "$r" HEAD "${URL[$r]}/v2/$REPO/blobs/$DIGEST"; done
    done
done
for r in "${REGISTRIES[@]}"; do kill -0 "${PID[$r]}" 2>/dev/null || die "$r died during the run (log: $T/$r.log)"; done

# --- report -----------------------------------------------------------------------------------------
for k in "${!BEST[@]}"; do record "$k" "${BEST[$k]}"; done
for k in "${!OHA_BEST[@]}"; do record "$k" "${OHA_BEST[$k]}"; done
echo "load:      $(uptime | sed 's/.*load average: //') (1/5/15 min) at end" >>"$T/machine.txt"
{
    echo '```'
    cat "$T/machine.txt"
    echo '```'
    echo
    python3 "$HELPERS/report_cluster.py" "$RESULTS"
} >"$T/report.md"
[[ -n "${BENCH_OUT:-}" ]] && cp "$T/report.md" "$BENCH_OUT"
echo
cat "$T/report.md"
