#!/usr/bin/env bash
# What authorization costs (the tenants-and-auth issue, "Benchmark"): the same Aerugo build
# twice side by side on loopback, in one run — one open (no users), one closed (a bootstrap
# admin; requests carry a bearer token or basic credentials) — and the token service itself;
# then an edge gateway in front of each, serving the cached blob: anonymous through the open
# one, with the bearer token (verified at the edge against the core's JWK set) through the
# closed one. Prints req/s, latency, server CPU per request and the closed/open ratios (target:
# ≥ 0.9, an authorization overhead under 10 %). See docs/benchmarks.md.
#
#   ./scripts/bench-auth.sh                 # 10 s runs at 64 connections
#   BENCH_SECONDS=3 ./scripts/bench-auth.sh # quick check
#
# Environment: BENCH_SECONDS, BENCH_CONNS (64), BENCH_OHA_REPEAT (1: best of N), BENCH_OUT=FILE,
# AERUGO_BIN=PATH, AERUGO_SKIP_INSTALL=1, CARGO_TARGET_DIR (default ~/.cache/aerugo-target).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
HELPERS=$ROOT/scripts/bench
# shellcheck source=bench/lib.sh
source "$HELPERS/lib.sh"

SECONDS_PER_RUN=${BENCH_SECONDS:-10}
CONNS=${BENCH_CONNS:-64}
OHA_REPEAT=${BENCH_OHA_REPEAT:-1}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aerugo-target}"
export PATH="$HOME/.cargo/bin:$PATH"
ADMIN=bench-admin
PASSWORD=bench-password-1

step "checking tools"
install_debs curl python3
if [[ "${AERUGO_SKIP_INSTALL:-0}" != 1 ]] && ! command -v oha >/dev/null 2>&1; then
    note "oha missing: cargo install oha --locked"
    cargo install oha --locked
fi
for t in curl python3 oha; do command -v "$t" >/dev/null 2>&1 || die "$t is not installed"; done
oha_setup

if [[ -z "${AERUGO_BIN:-}" ]]; then
    step "building aerugo (release)"
    cargo build --release --bin aerugo >&2
    AERUGO_BIN=$CARGO_TARGET_DIR/release/aerugo
fi
[[ -x "$AERUGO_BIN" ]] || die "no aerugo binary at $AERUGO_BIN"

T=$(mktemp -d "${TMPDIR:-/tmp}/aerugo-bench-auth.XXXXXX")
declare -A PID=() URL=()
cleanup() {
    local rc=$?
    for p in "${PID[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PID[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$T"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_aerugo() { # name [extra env assignments...]
    local name=$1 port
    shift
    port=$(free_port)
    mkdir -p "$T/$name"
    env AERUGO__SERVER__LISTEN_ADDRESS="127.0.0.1:$port" AERUGO__SERVER__DATA_DIR="$T/$name" \
        AERUGO__SERVER__LOG_LEVEL=warn "$@" "$AERUGO_BIN" serve >"$T/$name.log" 2>&1 &
    PID[$name]=$!
    URL[$name]=http://127.0.0.1:$port
    wait_ready "$name" "${PID[$name]}" "${URL[$name]}/healthz" "$T/$name.log"
}

step "starting an open and a closed aerugo"
start_aerugo open
start_aerugo closed AERUGO__AUTH__BOOTSTRAP_ADMIN=$ADMIN AERUGO__AUTH__BOOTSTRAP_ADMIN_PASSWORD=$PASSWORD

step "pushing a small image to both"
head -c 4096 /dev/urandom >"$T/layer.bin"
LAYER_DIGEST=sha256:$(sha256sum "$T/layer.bin" | cut -d' ' -f1)
write_image "$T/config.json" "$T/manifest.json" "$LAYER_DIGEST" 4096
for name in open closed; do
    # The closed registry's pushes sign in with basic credentials: curl reads them from the
    # .curlrc under CURL_HOME (lib.sh's pushes take no credentials themselves).
    mkdir -p "$T/curl-$name"
    [[ $name == closed ]] && printf 'user = "%s:%s"\n' "$ADMIN" "$PASSWORD" >"$T/curl-$name/.curlrc"
    export CURL_HOME=$T/curl-$name
    out=$(push_mono "${URL[$name]}" bench/app put "$T/layer.bin" "$LAYER_DIGEST")
    [[ ${out%% *} == 201 ]] || die "layer push to $name: HTTP ${out%% *}"
    push_image "${URL[$name]}" bench/app "$T/config.json" "$T/manifest.json" latest
done
unset CURL_HOME

TOKEN=$(curl -fsS -u "$ADMIN:$PASSWORD" \
    "${URL[closed]}/auth/token?service=aerugo&scope=repository:bench/app:pull" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
BASIC="Authorization: Basic $(printf '%s:%s' "$ADMIN" "$PASSWORD" | base64 -w0)"
BEARER="Authorization: Bearer $TOKEN"
ACCEPT="Accept: $MT"

# rounds ROW...: each ROW is "name|pid|method|url|header"; measures every row once per round,
# OHA_REPEAT rounds, and keeps each row's run with the most req/s in ROW[name]. The rows of
# a group alternate (open, bearer, basic, open, …) rather than each taking its runs in a row,
# so that a drift of the machine during the group weighs on all of them alike.
rounds() {
    local i spec name pid method url header line
    for ((i = 0; i < OHA_REPEAT; i++)); do
        for spec in "$@"; do
            IFS='|' read -r name pid method url header <<<"$spec"
            line=$(oha_measure "$pid" "$CONNS" "$SECONDS_PER_RUN" "$method" "$url" "$header")
            if [[ -z ${ROW[$name]:-} ]] || python3 -c "import sys; sys.exit(0 if float('${line%% *}') > float('${ROW[$name]%% *}') else 1)"; then
                ROW[$name]=$line
            fi
        done
    done
}

# oha_measure takes one header: an Accept for manifests is sent with the open registry;
# the closed registry's manifest runs carry only the credentials (every format is acceptable
# by digest, so the answer is the same manifest).
declare -A ROW=()
step "manifest GET by digest"
rounds "manifest_open|${PID[open]}|GET|${URL[open]}/v2/bench/app/manifests/$MANIFEST_DIGEST|$ACCEPT" \
    "manifest_bearer|${PID[closed]}|GET|${URL[closed]}/v2/bench/app/manifests/$MANIFEST_DIGEST|$BEARER" \
    "manifest_basic|${PID[closed]}|GET|${URL[closed]}/v2/bench/app/manifests/$MANIFEST_DIGEST|$BASIC"
step "blob HEAD"
rounds "head_open|${PID[open]}|HEAD|${URL[open]}/v2/bench/app/blobs/$LAYER_DIGEST|" \
    "head_bearer|${PID[closed]}|HEAD|${URL[closed]}/v2/bench/app/blobs/$LAYER_DIGEST|$BEARER" \
    "head_basic|${PID[closed]}|HEAD|${URL[closed]}/v2/bench/app/blobs/$LAYER_DIGEST|$BASIC"
step "edge gateways in front of both, the blob cached"
start_gateway() { # name core
    local name=$1 core=$2 port
    port=$(free_port)
    cat >"$T/$name.toml" <<TOML
[server]
log_level = "warn"
[edge]
listen_address = "127.0.0.1:$port"
cache_dir = "$T/$name-cache"
[edge.gateway]
cores = ["${URL[$core]#http://}"]
TOML
    # The closed core's gateway fills as the admin.
    [[ $core == closed ]] &&
        printf 'service_username = "%s"\nservice_password = "%s"\n' "$ADMIN" "$PASSWORD" >>"$T/$name.toml"
    "$AERUGO_BIN" edge --config "$T/$name.toml" >"$T/$name.log" 2>&1 &
    PID[$name]=$!
    URL[$name]=http://127.0.0.1:$port
    wait_ready "$name" "${PID[$name]}" "${URL[$name]}/healthz" "$T/$name.log"
}
start_gateway edge_open open
start_gateway edge_closed closed
for name in edge_open edge_closed; do
    header=()
    [[ $name == edge_closed ]] && header=(-H "$BEARER")
    code=$(curl -s -o /dev/null -w '%{http_code}' "${header[@]}" "${URL[$name]}/v2/bench/app/blobs/$LAYER_DIGEST")
    [[ $code == 200 ]] || die "blob GET through $name: HTTP $code"
done
rounds "edgeget_open|${PID[edge_open]}|GET|${URL[edge_open]}/v2/bench/app/blobs/$LAYER_DIGEST|" \
    "edgeget_bearer|${PID[edge_closed]}|GET|${URL[edge_closed]}/v2/bench/app/blobs/$LAYER_DIGEST|$BEARER"

step "token issuance"
rounds "token_basic|${PID[closed]}|GET|${URL[closed]}/auth/token?service=aerugo&scope=repository:bench/app:pull|$BASIC" \
    "token_anonymous|${PID[closed]}|GET|${URL[closed]}/auth/token?service=aerugo&scope=repository:bench/app:pull|"

report() {
    echo "## Authorization cost ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load $(uptime | sed 's/.*load average: //'))"
    echo
    echo "\`$0\`, ${SECONDS_PER_RUN} s per run at $CONNS connections, $("$AERUGO_BIN" --version) from git $(git -C "$ROOT" rev-parse --short HEAD)."
    echo
    echo "| request | req/s | p50 ms | p99 ms | server CPU ms / 1000 req | vs open |"
    echo "|---|---:|---:|---:|---:|---:|"
    local key base
    for key in manifest_open manifest_bearer manifest_basic head_open head_bearer head_basic edgeget_open edgeget_bearer token_basic token_anonymous; do
        read -r rps p50 p99 _ _ _ cpu <<<"${ROW[$key]}"
        base=${key%%_*}_open
        ratio="—"
        [[ -n ${ROW[$base]:-} && $key != "$base" ]] && ratio=$(calc "round($rps / ${ROW[$base]%% *}, 2)")
        echo "| $key | $rps | $p50 | $p99 | $cpu | $ratio |"
    done
}
report | tee "${BENCH_OUT:-/dev/null}"
