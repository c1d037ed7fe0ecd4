#!/usr/bin/env bash
# How Aerugo's costs grow with the registry's size (issue 10, "Costs that stay flat as the
# registry grows"), on the embedded stack (SQLite + filesystem) and the production stack
# (PostgreSQL + S3 + Redis). See docs/benchmarks.md ("Scale") for the figures.
#
#   AERUGO_BIN=target/release/aerugo ./scripts/bench-scale.sh
#   BENCH_SIZES="0 10000" BENCH_STACKS=embedded BENCH_SECONDS=2 ./scripts/bench-scale.sh  # quick
#
# For every stack and size N a fresh registry is seeded by `aerugo admin seed` (through the
# registry's own methods, see src/seed.rs): N blobs, N/10 repositories `seed/r…` with a manifest
# each, N/10 tags in `seed/tags`, min(N/10, 1000) referrers of one manifest (size 0 means one
# of each: the near-empty registry every ratio is taken against). Then, against `aerugo serve`:
# p50/p99 of single requests (oha, 1 connection, BENCH_SECONDS each) — a manifest GET by the
# first and the last tag and in the last repository, a blob HEAD, the first and the last page of
# the tag list and of the catalog (100 entries), the referrers list —, the server's RSS, then an
# offline GC pass (`aerugo admin gc --grace-period 3600`: a full walk that deletes nothing)
# with its wall time and peak RSS, then one with no grace period, which collects the seed's
# unreferenced blobs (all but each repository's first and the two of seed/tags). Last, the edge: start-up time (until /healthz answers) and RSS
# with BENCH_EDGE_ENTRIES cached blobs (files written in the cache's layout) against an empty
# cache, with a warm and a cold (dropped) page cache.
#
# Environment: BENCH_SIZES ("0 10000 100000 1000000"), BENCH_STACKS ("embedded production"),
# BENCH_SECONDS (3), BENCH_SEED_CONCURRENCY (32), BENCH_EDGE_ENTRIES (100000; 0 skips the edge),
# BENCH_GC_COLLECT (1; 0 skips the collecting pass, which at 10⁶ on an S3 server takes hours),
# BENCH_OUT (a file for the report too), BENCH_KEEP=1 (keep the temp directory), AERUGO_BIN,
# AERUGO_SKIP_INSTALL, and the production services of scripts/bench-cluster.sh: BENCH_PG,
# BENCH_REDIS, BENCH_S3_ENDPOINT, BENCH_S3_ACCESS_KEY, BENCH_S3_SECRET_KEY, BENCH_S3_REGION.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
HELPERS=$ROOT/scripts/bench
# shellcheck source=bench/lib.sh
source "$HELPERS/lib.sh"

SIZES=${BENCH_SIZES:-0 10000 100000 1000000}
STACKS=${BENCH_STACKS:-embedded production}
SECS=${BENCH_SECONDS:-3}
SEED_CONCURRENCY=${BENCH_SEED_CONCURRENCY:-32}
EDGE_ENTRIES=${BENCH_EDGE_ENTRIES:-100000}
GC_COLLECT=${BENCH_GC_COLLECT:-1}
production_services
export PATH="$HOME/.cargo/bin:$PATH"
# The commands' stdout is their JSON report; INFO logs would go there too.
export LOG_LEVEL=warn

# --- tools and services ------------------------------------------------------------------------
step "checking tools and services"
install_debs curl python3
if [[ "${AERUGO_SKIP_INSTALL:-0}" != 1 ]] && ! command -v oha >/dev/null 2>&1; then
    note "oha missing: cargo install oha --locked"
    cargo install oha --locked
fi
for t in curl python3 oha sha256sum; do
    command -v "$t" >/dev/null 2>&1 || die "$t is not installed"
done
if [[ " $STACKS " == *" production "* ]]; then
    scripts/services.sh postgres redis s3 >&2
    for t in psql redis-cli; do command -v "$t" >/dev/null 2>&1 || die "$t is not installed"; done
fi
build_aerugo
oha_setup

T=$(mktemp -d "${TMPDIR:-/tmp}/aerugo-bench-scale.XXXXXX")
RUN=$(basename "$T" | tr 'A-Z.' 'a-z-')
SUFFIX=${RUN##*-}
RESULTS=$T/results.tsv
: >"$RESULTS"
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RESULTS"; } # stack size metric value

declare -A PID=()
CURRENT_DB="" CURRENT_BUCKET=""
drop_production() {
    [[ -n $CURRENT_DB ]] && { psql_admin -c "DROP DATABASE IF EXISTS $CURRENT_DB WITH (FORCE)" || warn "database $CURRENT_DB not dropped"; }
    [[ -n $CURRENT_BUCKET ]] && { s3 purge "$CURRENT_BUCKET" || warn "bucket $CURRENT_BUCKET not removed"; }
    [[ -n $CURRENT_DB ]] && { redis-cli -h "${REDIS%:*}" -p "${REDIS##*:}" --scan --pattern "$RUN:*" |
        while read -r k; do redis-cli -h "${REDIS%:*}" -p "${REDIS##*:}" unlink "$k" >/dev/null; done; }
    CURRENT_DB="" CURRENT_BUCKET=""
}
cleanup() {
    local rc=$? p
    for p in "${PID[@]}"; do stop_pid "$p"; done
    drop_production
    if [[ "${BENCH_KEEP:-0}" == 1 ]]; then echo "kept $T" >&2; else rm -rf "$T"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

{
    machine_info
    echo "sizes:     $SIZES; stacks: $STACKS; $SECS s per latency row, 1 connection"
} | tee "$T/machine.txt" >&2

# --- one registry ------------------------------------------------------------------------------
# The seed's counts for size N (see the header).
counts() { # n → blobs repositories tags referrers
    local n=$1
    if ((n == 0)); then echo "1 1 1 1"; return; fi
    local tenth=$((n / 10))
    echo "$n $tenth $tenth $((tenth < 1000 ? tenth : 1000))"
}

write_conf() { # stack size dir port
    local stack=$1 n=$2 dir=$3 port=$4
    cat >"$dir/aerugo.toml" <<EOF
[server]
listen_address = "127.0.0.1:$port"
data_dir = "$dir/data"
EOF
    [[ $stack == production ]] || return 0
    CURRENT_DB=scale_${SUFFIX}_$n
    CURRENT_BUCKET=sc-$SUFFIX-$n
    psql_admin -c "CREATE DATABASE $CURRENT_DB"
    s3 create "$CURRENT_BUCKET"
    write_production_conf "$dir/aerugo.toml" "$CURRENT_BUCKET" "$CURRENT_DB" "$RUN:"
}

# Runs a command (its stdout into $T/<metric>.out); records its wall seconds and peak RSS (MiB)
# under `metric`.
timed_run() { # stack size metric command...
    local stack=$1 n=$2 metric=$3
    shift 3
    local out
    out=$(python3 - "$T/$metric.out" "$@" <<'PY'
import resource, subprocess, sys, time
started = time.monotonic()
with open(sys.argv[1], "wb") as stdout:
    done = subprocess.run(sys.argv[2:], stdout=stdout, stderr=subprocess.PIPE)
elapsed = time.monotonic() - started
if done.returncode != 0:
    sys.stderr.write(done.stderr.decode(errors="replace"))
    sys.exit(done.returncode)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(f"{elapsed:.2f} {peak:.1f}")
PY
    ) || die "$metric failed: $*"
    record "$stack" "$n" "$metric.seconds" "${out% *}"
    record "$stack" "$n" "$metric.peak_mib" "${out#* }"
}

latency() { # stack size metric pid method url [header]
    local row
    row=$(oha_measure "$4" 1 "$SECS" "$5" "$6" "${7:-}")
    read -r _ p50 p99 _ <<<"$row"
    record "$1" "$2" "$3.p50_ms" "$p50"
    record "$1" "$2" "$3.p99_ms" "$p99"
}

tag_name() { printf 't%07d' "$1"; }
repo_name() { printf 'seed/r%07d' "$1"; }

measure_registry() { # stack size
    local stack=$1 n=$2 dir=$T/$1-$2 port blobs repos tags refs
    read -r blobs repos tags refs < <(counts "$n")
    step "$stack, size $n: seeding $blobs blobs, $repos repositories, $tags tags, $refs referrers"
    mkdir -p "$dir/data"
    port=$(free_port)
    write_conf "$stack" "$n" "$dir" "$port"
    local cfg=(--config "$dir/aerugo.toml")
    timed_run "$stack" "$n" seed "$AERUGO_BIN" admin "${cfg[@]}" seed --blobs "$blobs" \
        --repositories "$repos" --tags "$tags" --referrers "$refs" --concurrency "$SEED_CONCURRENCY"

    step "$stack, size $n: requests"
    "$AERUGO_BIN" serve "${cfg[@]}" >"$dir/serve.log" 2>&1 &
    PID[serve]=$!
    local base=http://127.0.0.1:$port
    wait_ready aerugo "${PID[serve]}" "$base/v2/" "$dir/serve.log"
    local accept="Accept: application/vnd.oci.image.manifest.v1+json"
    local last_tag last_repo blob subject
    last_tag=$(tag_name $((tags - 1)))
    last_repo=$(repo_name $((repos - 1)))
    blob=sha256:$(printf 'aerugo seed blob %d\n' $((repos - 1)) | sha256sum | cut -d' ' -f1)
    subject=$(curl -fsS -o /dev/null -D - -H "$accept" "$base/v2/seed/tags/manifests/t0000000" |
        tr -d '\r' | awk 'tolower($1)=="docker-content-digest:" {print $2}')
    [[ -n $subject ]] || die "no digest for seed/tags:t0000000"
    local p=${PID[serve]}
    latency "$stack" "$n" manifest_first_tag "$p" GET "$base/v2/seed/tags/manifests/t0000000" "$accept"
    latency "$stack" "$n" manifest_last_tag "$p" GET "$base/v2/seed/tags/manifests/$last_tag" "$accept"
    latency "$stack" "$n" manifest_last_repo "$p" GET "$base/v2/$last_repo/manifests/latest" "$accept"
    latency "$stack" "$n" blob_head "$p" HEAD "$base/v2/$last_repo/blobs/$blob"
    latency "$stack" "$n" tags_first_page "$p" GET "$base/v2/seed/tags/tags/list?n=100"
    if ((tags > 100)); then
        latency "$stack" "$n" tags_last_page "$p" GET "$base/v2/seed/tags/tags/list?n=100&last=$(tag_name $((tags - 101)))"
    fi
    latency "$stack" "$n" catalog_first_page "$p" GET "$base/v2/_catalog?n=100"
    if ((repos > 100)); then
        latency "$stack" "$n" catalog_last_page "$p" GET "$base/v2/_catalog?n=100&last=$(repo_name $((repos - 101)))"
    fi
    latency "$stack" "$n" referrers "$p" GET "$base/v2/seed/tags/referrers/$subject"
    record "$stack" "$n" serve.rss_mib "$(rss_mib "$p")"
    stop_pid "${PID[serve]}"
    unset 'PID[serve]'

    step "$stack, size $n: garbage collection (offline): a pass that keeps everything, then one that collects"
    timed_run "$stack" "$n" gc_keep "$AERUGO_BIN" admin "${cfg[@]}" gc --grace-period 3600
    if [[ $GC_COLLECT == 1 ]]; then
        # Metadata keeps whole seconds; with no grace period the seed's unreferenced blobs go.
        sleep 1.1
        timed_run "$stack" "$n" gc_collect "$AERUGO_BIN" admin "${cfg[@]}" gc --grace-period 0
        record "$stack" "$n" gc_collect.blobs_deleted "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["blobs_deleted"])' "$T/gc_collect.out")"
    fi
    if [[ $stack == production ]]; then drop_production; fi
    rm -rf "$dir"
}

# --- the edge ----------------------------------------------------------------------------------
# Writes `count` cached blobs (1 KiB each, named by their SHA-256) in the cache's layout.
fill_edge_cache() { # dir count
    python3 - "$1" "$2" <<'PY'
import hashlib, os, sys
root, count = sys.argv[1], int(sys.argv[2])
for i in range(count):
    body = (b"aerugo edge entry %d\n" % i).ljust(1024, b".")
    hexd = hashlib.sha256(body).hexdigest()
    d = os.path.join(root, "blobs", "sha256", hexd[:2])
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hexd), "wb") as f:
        f.write(body)
PY
}

edge_start() { # label entries cold(0|1)
    local dir=$T/edge-$2 port ms
    port=$(free_port)
    if (($3)); then sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || warn "cannot drop the page cache (not root?)"; fi
    local t0
    t0=$(now)
    "$AERUGO_BIN" edge --listen "127.0.0.1:$port" --cache-dir "$dir" --upstream http://127.0.0.1:9 \
        >"$dir.log" 2>&1 &
    PID[edge]=$!
    wait_ready edge "${PID[edge]}" "http://127.0.0.1:$port/healthz" "$dir.log"
    ms=$(calc "round(($(now) - $t0) * 1000)")
    record edge "$2" "$1.ready_ms" "$ms"
    record edge "$2" "$1.rss_mib" "$(rss_mib "${PID[edge]}")"
    stop_pid "${PID[edge]}"
    unset 'PID[edge]'
}

measure_edge() {
    local entries
    for entries in 0 "$EDGE_ENTRIES"; do
        step "edge: start-up with $entries cached blobs"
        mkdir -p "$T/edge-$entries"
        fill_edge_cache "$T/edge-$entries" "$entries"
        edge_start warm "$entries" 0
        edge_start cold "$entries" 1
    done
    rm -rf "$T"/edge-*
}

for stack in $STACKS; do
    for n in $SIZES; do measure_registry "$stack" "$n"; done
done
((EDGE_ENTRIES > 0)) && measure_edge

report=$(python3 "$HELPERS/report_scale.py" "$RESULTS" "$T/machine.txt")
echo "$report"
if [[ -n "${BENCH_OUT:-}" ]]; then echo "$report" >"$BENCH_OUT"; fi
