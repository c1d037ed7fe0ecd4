#!/usr/bin/env bash
# The test command of the project (README, .ci/run and CI all call this).
#
#   ./scripts/test.sh
#
# Idempotent: installs the Debian packages the tests need when they are missing, installs
# and starts PostgreSQL, Redis and the S3 server (scripts/services.sh) when they are not
# running, then runs fmt, clippy, the whole test suite (nextest when available), the API tests
# a second time on the production stack (PostgreSQL, S3, Redis) and the real-client tests a
# third time with presigned S3 redirects; before the tests it builds the benches (so they do
# not rot) and the runtime image the image test runs (scripts/image.sh).
#
# Environment:
#   CARGO_TARGET_DIR        defaults to ~/.cache/aerugo-target
#   AERUGO_REQUIRE_TOOLS    set to 1 here: a test that needs skopeo/podman/... fails instead
#                           of skipping when the tool is missing, and a service that cannot be
#                           started stops the run
#   AERUGO_SKIP_INSTALL=1   never call apt-get or cargo install (the tools must already be there)
#   AERUGO_TEST_*           services provided elsewhere (see scripts/services.sh)
#   AERUGO_NO_PODMAN=1      do not install podman (its test then fails while
#                           AERUGO_REQUIRE_TOOLS is set; `cargo nextest run` alone skips it)
#   AERUGO_NO_CONTAINERD=1  do not install containerd (ctr); likewise for the containerd
#                           mirror test, which also needs root (or passwordless sudo) to start
#                           its private containerd
#   The Docker engine is the machine's (never installed here): the docker login/push/pull
#   test fails while AERUGO_REQUIRE_TOOLS is set if `docker info` gets no answer.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/common.sh
source scripts/common.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aerugo-target}"
export AERUGO_REQUIRE_TOOLS="${AERUGO_REQUIRE_TOOLS:-1}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-always}"

# --- Debian packages -------------------------------------------------------------------------
# skopeo (+ podman, containerd): the real-client tests;
# docker-registry: the CNCF distribution registry (benchmark anchor, edge upstream in tests);
# jq: scripts; prometheus: promtool checks deploy/prometheus and the dashboard's queries;
# docker-compose: the compose cluster test; debootstrap: the images' bases (scripts/image.sh);
# valgrind: instruction counts (scripts/bench-callgrind.sh).
packages=(skopeo docker-registry jq prometheus docker-compose debootstrap valgrind)
if [[ "${AERUGO_NO_PODMAN:-0}" != 1 ]]; then
    packages+=(podman)
fi
# A containerd already on PATH will do (GitHub's runners have Docker's containerd.io, which
# conflicts with Debian's package).
if [[ "${AERUGO_NO_CONTAINERD:-0}" != 1 ]] &&
    ! { command -v containerd && command -v ctr; } >/dev/null 2>&1; then
    packages+=(containerd)
fi

step "checking Debian packages: ${packages[*]}"
if install_packages "${packages[@]}"; then
    echo "all present"
else
    warn "continuing without them: the tests that need them fail (AERUGO_REQUIRE_TOOLS) or skip"
fi

# --- local services --------------------------------------------------------------------------
step "local services (scripts/services.sh)"
./scripts/services.sh

# --- tool versions (useful in CI logs) ---------------------------------------------------------
step "tools"
cargo --version
rustc --version
for t in skopeo podman containerd docker docker-compose docker-registry jq promtool psql redis-server s3s-fs; do
    if command -v "$t" >/dev/null 2>&1; then
        case $t in
            docker-registry) echo "docker-registry: $(dpkg-query -W -f='${Version}' docker-registry 2>/dev/null || echo present)" ;;
            docker) echo "docker engine: $(docker info --format '{{.ServerVersion}}' 2>&1 | head -n1)" ;;
            *) echo "$t: $("$t" --version 2>&1 | head -n1)" ;;
        esac
    else
        echo "$t: not found"
    fi
done
echo "CARGO_TARGET_DIR=$CARGO_TARGET_DIR AERUGO_REQUIRE_TOOLS=$AERUGO_REQUIRE_TOOLS"

# --- cargo ------------------------------------------------------------------------------------
step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "dependency rule (scripts/check-deps.sh)"
./scripts/check-deps.sh

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

# The whole suite on the embedded backends (SQLite, filesystem, in-process cache), then the
# HTTP-level API tests again on the production stack (PostgreSQL, S3, Redis; see
# tests/it/support/stack.rs), then the real clients once more with blob GETs redirected to
# presigned S3 URLs.
if cargo nextest --version >/dev/null 2>&1; then
    nextest=1
    run_tests() { cargo nextest run --no-fail-fast "$@"; }
else
    nextest=0
    warn "cargo-nextest not installed: using cargo test"
    run_tests() { cargo test --no-fail-fast "$@"; }
fi

# tests_of MODULE...: sets `selected` to the arguments that run only the tests of those
# modules of tests/it (every test name there starts with its module).
tests_of() {
    if ((nextest)); then
        local IFS='|'
        selected=(--test it -E "test(/^($*)::/)")
    else
        selected=(--test it -- "${@/%/::}")
    fi
}

# One optimised build of the benches (so they do not rot) and of the binary the runtime image
# holds: built together, they share one feature set (the benches' dev-dependencies unify
# features), so the dependencies compile once rather than once for each.
step "cargo build --profile bench --bins --benches"
cargo build --profile bench --bins --benches

step "images (scripts/image.sh --services): the runtime image and the compose test's services"
if docker info >/dev/null 2>&1; then
    AERUGO_IMAGE_BINARY="$CARGO_TARGET_DIR/release/aerugo" ./scripts/image.sh --services
    export AERUGO_TEST_IMAGE="${AERUGO_IMAGE_TAG:-aerugo:test}"
    export AERUGO_TEST_SERVICES_IMAGE="${AERUGO_SERVICES_IMAGE_TAG:-aerugo-services:test}"
else
    warn "no Docker engine: no image is built (the image and compose tests fail while AERUGO_REQUIRE_TOOLS is set)"
fi

step "cargo audit, cargo deny"
echo "skipped here: they need the network (RustSec's database, crates' metadata); they run as"
echo "the audit and deny jobs of .github/workflows/ci.yml"

step "instruction counts of the hot paths against benches/baseline/callgrind.json"
CALLGRIND_SAME_CPU_ONLY=1 ./scripts/bench-callgrind.sh

step "tests, embedded stack: run --workspace"
run_tests --workspace

tests_of distribution locations skopeo auth manage
step "API tests, production stack: AERUGO_TEST_STACK=production run ${selected[*]}"
AERUGO_TEST_STACK=production run_tests "${selected[@]}"

tests_of skopeo auth::clients auth::engines
step "real clients, production stack, presigned redirects: AERUGO_TEST_S3_REDIRECT=1 run ${selected[*]}"
AERUGO_TEST_STACK=production AERUGO_TEST_S3_REDIRECT=1 run_tests "${selected[@]}"

# The API suites once more against the runtime image: every TestServer runs `aerugo serve`
# in a container of it (tests/it/support/container.rs), on the host's network.
if [[ -n ${AERUGO_TEST_IMAGE:-} ]]; then
    tests_of distribution skopeo auth manage docker
    step "API and real-client tests, servers from the image: AERUGO_TEST_SERVER_IMAGE=$AERUGO_TEST_IMAGE run ${selected[*]}"
    AERUGO_TEST_SERVER_IMAGE="$AERUGO_TEST_IMAGE" run_tests "${selected[@]}"
fi

step "all checks passed"
