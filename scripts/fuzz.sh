#!/usr/bin/env bash
# Builds every fuzz target and runs each for a bounded time (docs/fuzzing.md).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET…]     default: 600 seconds, every target
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`). The seed
# corpora in fuzz/corpus/<target>/ are read, never written: what a run discovers goes to
# $AERUGO_FUZZ_WORK/corpus/<target>/ (default ~/.cache/aerugo-fuzz), which later runs start
# from, and crash inputs to $AERUGO_FUZZ_WORK/artifacts/<target>/. The build uses its own
# target dir ($AERUGO_FUZZ_TARGET_DIR, default ~/.cache/aerugo-fuzz-target), since its
# RUSTFLAGS differ from a normal build's. Exits non-zero if any target found a crash.
set -euo pipefail

seconds="${1:-600}"
shift || true
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${AERUGO_FUZZ_WORK:-$HOME/.cache/aerugo-fuzz}"
target_dir="${AERUGO_FUZZ_TARGET_DIR:-$HOME/.cache/aerugo-fuzz-target}"
cd "$repo"

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

# Debug assertions on, so an arithmetic overflow is a crash too.
fuzz=(cargo +nightly fuzz)
build_flags=(--debug-assertions --target-dir "$target_dir")
"${fuzz[@]}" build "${build_flags[@]}"

failed=()
for target in "${targets[@]}"; do
    corpus="$work/corpus/$target"
    artifacts="$work/artifacts/$target"
    mkdir -p "$corpus" "$artifacts"
    echo "== $target: ${seconds}s"
    if ! "${fuzz[@]}" run "${build_flags[@]}" "$target" "$corpus" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -artifact_prefix="$artifacts/" -print_final_stats=1; then
        failed+=("$target")
        echo "== $target FAILED; reproducer(s) in $artifacts/"
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzzing found crashes in: ${failed[*]}"
    exit 1
fi
echo "every target ran ${seconds}s without a crash: ${targets[*]}"
