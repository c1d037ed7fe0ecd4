#!/usr/bin/env bash
# Single-request small-blob pushes (`POST ?digest=`, 1 KiB: signatures, SBOMs, configs) per
# second, for one or more `aerugo` binaries side by side in one run (issue 10: "single-request
# small-blob pushes ≥ 3× today's rate with the same durability"). See docs/benchmarks.md.
#
#   BENCH_BINS="before=/path/old/aerugo after=target/release/aerugo" ./scripts/bench-small-push.sh
#
# For every stack, every repeat and every binary in turn (interleaved, the order reversed on
# every other repeat, so a drift of the machine hits all alike): a fresh data directory (and, on the production stack, a fresh database and
# bucket), `aerugo serve`, then scripts/bench/small_push.py at each client count for
# BENCH_SECONDS, with the server's CPU time per push (utime + stime over the run). The best of
# BENCH_REPEAT runs is kept. With BENCH_STRACE=1 one more run per
# binary counts the server's fsync/fdatasync calls per push (strace -f -c).
#
# Environment: BENCH_BINS (default: the release build as "current"), BENCH_STACKS ("embedded";
# "production" adds PostgreSQL + s3s-fs + Redis, as scripts/bench-scale.sh), BENCH_CLIENTS
# ("1 4 16"), BENCH_SECONDS (5), BENCH_REPEAT (3), BENCH_BLOB_BYTES (1024), BENCH_STRACE (0),
# BENCH_OUT, and the services of scripts/bench-scale.sh (BENCH_PG, BENCH_REDIS, BENCH_S3_*).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
HELPERS=$ROOT/scripts/bench
# shellcheck source=bench/lib.sh
source "$HELPERS/lib.sh"

STACKS=${BENCH_STACKS:-embedded}
CLIENTS=${BENCH_CLIENTS:-1 4 16}
SECS=${BENCH_SECONDS:-5}
REPEAT=${BENCH_REPEAT:-3}
BLOB_BYTES=${BENCH_BLOB_BYTES:-1024}
production_services

step "checking tools and services"
install_debs curl python3
if [[ "${BENCH_STRACE:-0}" == 1 ]]; then install_debs strace; fi
if [[ " $STACKS " == *" production "* ]]; then scripts/services.sh postgres redis s3 >&2; fi
if [[ -z "${BENCH_BINS:-}" ]]; then
    build_aerugo
    BENCH_BINS="current=$AERUGO_BIN"
fi
read -r -a BINS <<<"$BENCH_BINS"

T=$(mktemp -d "${TMPDIR:-/tmp}/aerugo-bench-small-push.XXXXXX")
SUFFIX=$(basename "$T" | tr 'A-Z.' 'a-z-')
SUFFIX=${SUFFIX##*-}
SERVER="" DB="" BUCKET=""
teardown() {
    stop_pid "$SERVER"
    SERVER=""
    if [[ -n $DB ]]; then psql_admin -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || warn "database $DB not dropped"; fi
    if [[ -n $BUCKET ]]; then s3 purge "$BUCKET" || warn "bucket $BUCKET not removed"; fi
    DB="" BUCKET=""
    rm -rf "$T/data"
}
cleanup() {
    local rc=$?
    teardown
    if [[ "${BENCH_KEEP:-0}" == 1 ]]; then echo "kept $T" >&2; else rm -rf "$T"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Starts `binary` on a fresh registry of `stack`, optionally under `strace -c`; sets SERVER, URL.
serve() { # stack binary [strace-output]
    local port conf=$T/aerugo.toml
    port=$(free_port)
    URL=http://127.0.0.1:$port
    mkdir -p "$T/data"
    printf '[server]\nlisten_address = "127.0.0.1:%s"\ndata_dir = "%s/data"\n' "$port" "$T" >"$conf"
    if [[ $1 == production ]]; then
        DB=small_push_$SUFFIX
        BUCKET=sp-$SUFFIX
        psql_admin -c "CREATE DATABASE $DB"
        s3 create "$BUCKET"
        write_production_conf "$conf" "$BUCKET" "$DB" "$SUFFIX:"
    fi
    local run=("$2" serve --config "$conf")
    if [[ -n ${3:-} ]]; then run=(strace -f -c -o "$3" -e trace=fsync,fdatasync "${run[@]}"); fi
    LOG_LEVEL=warn "${run[@]}" >"$T/serve.log" 2>&1 &
    SERVER=$!
    wait_ready aerugo "$SERVER" "$URL/v2/" "$T/serve.log"
}

RESULTS=$T/results.tsv
: >"$RESULTS"
{
    machine_info
    for b in "${BINS[@]}"; do echo "binary:    ${b%%=*} = ${b#*=} ($("${b#*=}" --version 2>/dev/null))"; done
    echo "blobs:     $BLOB_BYTES bytes, distinct; $SECS s per run; best of $REPEAT interleaved runs"
} | tee "$T/machine.txt" >&2

for stack in $STACKS; do
    for r in $(seq 1 "$REPEAT"); do
        # Every other run in reverse order: a machine drifting over the run (it does, by
        # a third over the production rows) must not always favour the binary that runs first.
        order=("${BINS[@]}")
        if ((r % 2 == 0)); then
            order=()
            for ((i = ${#BINS[@]} - 1; i >= 0; i--)); do order+=("${BINS[i]}"); done
        fi
        for b in "${order[@]}"; do
            for c in $CLIENTS; do
                step "$stack, run $r, ${b%%=*}, $c client(s)"
                serve "$stack" "${b#*=}"
                c0=$(cpu_ticks "$SERVER")
                read -r rate p50 p99 n < <(python3 "$HELPERS/small_push.py" "$URL" "$SECS" "$c" "$BLOB_BYTES")
                c1=$(cpu_ticks "$SERVER")
                cpu=$(calc "round(($c1 - $c0) * 1000 / $CLK_TCK / max($n, 1), 3)")
                note "$rate pushes/s (p50 $p50 ms, p99 $p99 ms, $n pushes, server CPU $cpu ms per push)"
                printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$stack" "${b%%=*}" "$c" "$rate" "$p50" "$p99" "$cpu" >>"$RESULTS"
                teardown
            done
        done
    done
    if [[ "${BENCH_STRACE:-0}" == 1 ]]; then
        for b in "${BINS[@]}"; do
            step "$stack, ${b%%=*}: fsyncs per push (strace)"
            serve "$stack" "${b#*=}" "$T/strace.txt"
            read -r _ _ _ n < <(python3 "$HELPERS/small_push.py" "$URL" 3 1 "$BLOB_BYTES")
            # strace writes its summary when the server (its child) exits.
            stop_pid "$(pgrep -P "$SERVER" | head -n1)"
            wait "$SERVER" 2>/dev/null || true
            SERVER=""
            calls=$(awk '$NF=="fsync" || $NF=="fdatasync" {s += $4} END {print s+0}' "$T/strace.txt")
            printf '%s\t%s\tfsyncs\t%s\n' "$stack" "${b%%=*}" "$(calc "round($calls / $n, 2)")" >>"$RESULTS"
            teardown
        done
    fi
done

report=$(python3 - "$RESULTS" "$T/machine.txt" <<'PY'
import sys
from collections import defaultdict
rows, machine = sys.argv[1], sys.argv[2]
best, fsyncs, order = defaultdict(dict), {}, []
for line in open(rows):
    f = line.rstrip("\n").split("\t")
    if f[2] == "fsyncs":
        fsyncs[(f[0], f[1])] = f[3]
        continue
    stack, binary, clients, rate, p50, p99, cpu = f
    if binary not in order:
        order.append(binary)
    key = (stack, int(clients))
    if binary not in best[key] or float(rate) > best[key][binary][0]:
        best[key][binary] = (float(rate), p50, p99, cpu)
print("```\n" + open(machine).read().rstrip() + "\n```\n")
head = "| stack | clients | " + " | ".join(
    f"{b} pushes/s (p50 / p99 ms; server CPU ms per push)" for b in order)
if len(order) > 1:
    head += f" | {order[-1]} ÷ {order[0]}"
print(head + " |")
print("|---" * (2 + len(order) + (len(order) > 1)) + "|")
for (stack, clients) in sorted(best):
    cells = [best[(stack, clients)].get(b) for b in order]
    line = f"| {stack} | {clients} | " + " | ".join(
        f"{c[0]:.0f} ({c[1]} / {c[2]}; {c[3]})" if c else "–" for c in cells)
    if len(order) > 1 and cells[0] and cells[-1]:
        line += f" | {cells[-1][0] / cells[0][0]:.2f}×"
    print(line + " |")
if fsyncs:
    print()
    for (stack, binary), n in sorted(fsyncs.items()):
        print(f"- {stack}, {binary}: {n} fsync/fdatasync calls per push")
PY
)
echo "$report"
if [[ -n "${BENCH_OUT:-}" ]]; then echo "$report" >"$BENCH_OUT"; fi
