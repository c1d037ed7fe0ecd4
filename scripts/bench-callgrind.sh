#!/usr/bin/env bash
# Instruction counts of the hot paths under callgrind, compared with a stored baseline: exits
# 1 when a case costs more than its baseline by over the threshold. Instruction counts repeat
# on a shared, noisy machine where timings do not. See docs/benchmarks.md, "Instruction-count
# regression check".
#
#   ./scripts/bench-callgrind.sh            # measure, compare with benches/baseline/callgrind.json
#   ./scripts/bench-callgrind.sh --update   # measure and write that baseline
#
# Each case runs twice, with N and 2N iterations: (I(2N) - I(N)) / N is its instructions per
# iteration, without the set-up, warm-up and exit that both runs share (the router cases: the
# median of three such pairs, see `pairs` below). The counts depend on the compiler and the
# dependencies' versions, so the baseline is regenerated (--update) when the toolchain or
# Cargo.lock changes; a baseline made by another rustc or from another Cargo.lock gives a
# warning and is compared anyway.
#
# Environment:
#   CALLGRIND_THRESHOLD=0.05   relative increase over the baseline that fails the check
#   CALLGRIND_SAME_CPU_ONLY=1  compare only when the baseline was measured on this CPU model
#                              (scripts/test.sh: its machines' CPUs vary; other CPUs print)
#   CARGO_TARGET_DIR           defaults to ~/.cache/aerugo-target
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/common.sh
source scripts/common.sh

die() {
    warn "$*"
    exit 2
}

baseline=benches/baseline/callgrind.json
update=0
case "${1:-}" in
    --update) update=1 ;;
    "") ;;
    *) die "usage: $0 [--update]" ;;
esac
export CALLGRIND_THRESHOLD=${CALLGRIND_THRESHOLD:-0.05}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/aerugo-target}
command -v valgrind >/dev/null || die "valgrind is not installed (Debian: apt-get install valgrind)"
((update)) || [[ -f $baseline ]] || die "no $baseline yet: run $0 --update"

# Bench binary, case, N. With these N each run takes 5-25 s here (callgrind runs about
# 150 M instructions a second); a router run spends ~700 M instructions, ~5 s, of that on its
# set-up (two argon2 hashes among it).
cases=(
    "router head_open 20000"
    "router head_bearer 20000"
    "router head_basic 20000"
    "router manifest_open 20000"
    "router manifest_bearer 20000"
    "router manifest_basic 20000"
    "hot_paths hash_sha256_1mib 20"
    "hot_paths path_blob_by_digest 200000"
    "hot_paths path_manifest_by_tag 200000"
    "hot_paths manifest_parse_20_layers 5000"
)
# How each bench binary is told which case to run, and how many times.
declare -A case_variable=([router]=ROUTER_BENCH_CASE [hot_paths]=HOT_PATH)
declare -A count_variable=([router]=ROUTER_BENCH_REQUESTS [hot_paths]=HOT_PATH_ITERATIONS)
# N/2N pairs per case; the median of their figures counts. A router pair's figure moves by up
# to ~4 % from one pair to the next (glibc's malloc takes other paths on a heap that the
# set-up's threads lay out differently every time), so one pair alone could stray past the
# threshold; the hot paths run on one thread and repeat within a few instructions.
declare -A pairs=([router]=3 [hot_paths]=1)

step "cargo bench --no-run --bench router --bench hot_paths"
artifacts=$(
    cargo bench --no-run --bench router --bench hot_paths --message-format=json |
        python3 -c '
import json, sys
for line in sys.stdin:
    message = json.loads(line)
    if message.get("reason") == "compiler-artifact" and message.get("executable"):
        print(message["target"]["name"], message["executable"])
'
)
declare -A executable
while read -r bench path; do executable[$bench]=$path; done <<<"$artifacts"
for bench in router hot_paths; do
    [[ -n ${executable[$bench]:-} ]] || die "cargo built no executable for the $bench bench"
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# instructions OUT BINARY VAR=VALUE...: runs BINARY under callgrind with those variables set
# and prints the total instruction count that callgrind wrote to OUT.
instructions() {
    local out=$1 binary=$2
    shift 2
    env "$@" valgrind --tool=callgrind -q --callgrind-out-file="$out" "$binary" >/dev/null
    awk '$1 == "summary:" || $1 == "totals:" { print $2; exit }' "$out"
}

step "callgrind, each case with N and 2N iterations (both at once, one per core)"
for entry in "${cases[@]}"; do
    read -r bench name n <<<"$entry"
    started=$SECONDS
    estimates=()
    for ((pair = 0; pair < pairs[$bench]; pair++)); do
        for multiple in 1 2; do
            instructions "$work/$name.$multiple.out" "${executable[$bench]}" \
                "${case_variable[$bench]}=$name" "${count_variable[$bench]}=$((multiple * n))" \
                >"$work/$name.$multiple.ir" &
        done
        wait -n
        wait -n
        once=$(<"$work/$name.1.ir") twice=$(<"$work/$name.2.ir")
        ((twice > once)) || die "$name: $twice instructions for 2N is not more than $once for N"
        estimates+=($(((twice - once) / n)))
    done
    mapfile -t sorted < <(printf '%s\n' "${estimates[@]}" | sort -n)
    median=${sorted[${#sorted[@]} / 2]}
    printf '%-26s N=%-7s %10s instructions/iteration  (pairs: %s; %d s)\n' \
        "$name" "$n" "$median" "${sorted[*]}" $((SECONDS - started))
    echo "$name $median" >>"$work/results"
done

step "compared with $baseline (threshold $CALLGRIND_THRESHOLD)"
BASELINE=$baseline UPDATE=$update RESULTS=$work/results \
    GIT_REVISION=$(git describe --always --dirty 2>/dev/null || echo unknown) \
    RUSTC_VERSION=$(rustc --version) \
    VALGRIND_VERSION=$(valgrind --version) \
    CARGO_LOCK_SHA256=$(sha256sum Cargo.lock | cut -d' ' -f1) \
    CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo) \
    python3 - <<'EOF'
import datetime, json, os, sys

measured = {}
with open(os.environ["RESULTS"]) as results:
    for line in results:
        name, count = line.split()
        measured[name] = int(count)
threshold = float(os.environ["CALLGRIND_THRESHOLD"])
meta = {
    "git": os.environ["GIT_REVISION"],
    "rustc": os.environ["RUSTC_VERSION"],
    "valgrind": os.environ["VALGRIND_VERSION"],
    "cargo_lock_sha256": os.environ["CARGO_LOCK_SHA256"],
    "cpu": os.environ["CPU"],
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
}
path = os.environ["BASELINE"]
stored = {"meta": {}, "instructions_per_iteration": {}}
if os.path.exists(path):
    with open(path) as file:
        stored = json.load(file)

def warn(text):
    print(f"\033[33mwarning: {text}\033[0m", file=sys.stderr)

if os.environ.get("CALLGRIND_SAME_CPU_ONLY") == "1" and os.environ["UPDATE"] != "1":
    other = stored["meta"].get("cpu")
    if other and other != meta["cpu"]:
        warn(f"the baseline was measured on another CPU ({other}; this one: {meta['cpu']}), "
             "whose glibc and library code paths differ: counts shown, not compared")
        for name, count in measured.items():
            print(f"| {name} | {count:,} |")
        sys.exit(0)

for key, what in [("rustc", "compiler"), ("cargo_lock_sha256", "Cargo.lock")]:
    before = stored["meta"].get(key)
    if before and before != meta[key]:
        warn(f"the baseline was made with another {what} ({before}, now {meta[key]}): "
             "counts may differ for that reason alone; compared anyway")

regressions, improvements = [], []
print("| case | instructions/iteration | baseline | ratio | |")
print("|---|---:|---:|---:|---|")
for name, count in measured.items():
    base = stored["instructions_per_iteration"].get(name)
    if base is None:
        print(f"| {name} | {count:,} | – | – | no baseline |")
        continue
    ratio = count / base
    verdict = "ok"
    if ratio > 1 + threshold:
        verdict = "**regression**"
        regressions.append(name)
    elif ratio < 1 - threshold:
        verdict = "improved"
        improvements.append(name)
    print(f"| {name} | {count:,} | {base:,} | {ratio:.3f} | {verdict} |")

if os.environ["UPDATE"] == "1":
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as file:
        json.dump({"meta": meta, "instructions_per_iteration": measured}, file, indent=2)
        file.write("\n")
    print(f"\nwrote {path}")
    sys.exit(0)
missing = sorted(set(measured) - set(stored["instructions_per_iteration"]))
if missing:
    warn(f"not in the baseline, so not checked: {', '.join(missing)} (run with --update)")
if improvements:
    print(f"\nimproved beyond {threshold * 100:g} %: {', '.join(improvements)}; "
          "run with --update to keep the gain from slipping back")
if regressions:
    print(f"\nregression beyond {threshold * 100:g} %: {', '.join(regressions)}")
    sys.exit(1)
EOF
