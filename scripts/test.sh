#!/usr/bin/env bash
# The test command of the project (README, .ci/run and CI all call this).
#
#   ./scripts/test.sh
#
# Idempotent: installs the Debian packages the tests need when they are missing, starts the
# local PostgreSQL and Redis when they are not running, then runs fmt, clippy, the whole test
# suite (nextest when available) and builds the benches so they do not rot.
#
# Environment:
#   CARGO_TARGET_DIR        defaults to ~/.cache/aerugo-target
#   AERUGO_REQUIRE_TOOLS    set to 1 here: a test that needs skopeo/podman/... fails instead
#                           of skipping when the tool is missing
#   AERUGO_SKIP_INSTALL=1   never call apt-get (the tools must already be there)
#   AERUGO_NO_PODMAN=1      do not install podman (its test then fails while
#                           AERUGO_REQUIRE_TOOLS is set; `cargo nextest run` alone skips it)
#   AERUGO_NO_CONTAINERD=1  do not install containerd (ctr); likewise for the containerd
#                           mirror test, which also needs root (or passwordless sudo) to start
#                           its private containerd
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
warn() { printf '\033[33mwarning: %s\033[0m\n' "$*" >&2; }

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aerugo-target}"
export AERUGO_REQUIRE_TOOLS="${AERUGO_REQUIRE_TOOLS:-1}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-always}"

# --- Debian packages -------------------------------------------------------------------------
# skopeo (+ podman, containerd): the real-client tests;
# docker-registry: the CNCF distribution registry (benchmark anchor, edge upstream in tests);
# jq: scripts.
packages=(skopeo docker-registry jq)
if [[ "${AERUGO_NO_PODMAN:-0}" != 1 ]]; then
    packages+=(podman)
fi
# A containerd already on PATH will do (GitHub's runners have Docker's containerd.io, which
# conflicts with Debian's package).
if [[ "${AERUGO_NO_CONTAINERD:-0}" != 1 ]] &&
    ! { command -v containerd && command -v ctr; } >/dev/null 2>&1; then
    packages+=(containerd)
fi

is_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

step "checking Debian packages: ${packages[*]}"
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
    for p in "${packages[@]}"; do
        is_installed "$p" || missing+=("$p")
    done
else
    warn "not a Debian system (no dpkg-query); skipping package installation"
fi

if ((${#missing[@]})); then
    if [[ "${AERUGO_SKIP_INSTALL:-0}" == 1 ]]; then
        warn "missing packages (AERUGO_SKIP_INSTALL=1, not installing): ${missing[*]}"
    else
        SUDO=()
        if [[ "$(id -u)" != 0 ]]; then
            if command -v sudo >/dev/null 2>&1; then
                SUDO=(sudo)
            else
                warn "not root and no sudo: cannot install ${missing[*]}"
            fi
        fi
        if [[ "$(id -u)" == 0 || ${#SUDO[@]} -gt 0 ]]; then
            step "installing: ${missing[*]}"
            # Packages such as docker-registry and containerd ship a service that would start
            # on install (docker-registry would take port 5000); a policy-rc.d that denies
            # starts is the Debian way to say no.
            policy_rc_d=/usr/sbin/policy-rc.d
            created_policy=0
            if [[ ! -e $policy_rc_d ]]; then
                printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy_rc_d" >/dev/null
                "${SUDO[@]}" chmod 755 "$policy_rc_d"
                created_policy=1
            fi
            install_rc=0
            {
                "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
                    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
                        apt-get install -y -qq --no-install-recommends "${missing[@]}"
            } || install_rc=$?
            if ((created_policy)); then "${SUDO[@]}" rm -f "$policy_rc_d"; fi
            if ((install_rc)); then
                echo "apt-get failed (exit $install_rc) installing: ${missing[*]}" >&2
                exit "$install_rc"
            fi
        fi
    fi
else
    echo "all present"
fi

# --- local services --------------------------------------------------------------------------
# Not used by the tests of the embedded defaults yet; the PostgreSQL and Redis backends' tests
# (later issues) need them. Failing to start them is a warning, not an error, for now.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

step "local services"
if port_open 5432; then
    echo "postgresql: up"
elif command -v pg_ctlcluster >/dev/null 2>&1 && [[ -d /etc/postgresql ]]; then
    echo "postgresql: starting"
    # shellcheck disable=SC2012 # version directories are plain numbers
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start ||
        warn "could not start PostgreSQL"
else
    warn "postgresql: not running and not installed here"
fi
if port_open 6379; then
    echo "redis: up"
elif command -v redis-server >/dev/null 2>&1; then
    echo "redis: starting"
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log || warn "could not start Redis"
else
    warn "redis: not running and not installed here"
fi

# --- tool versions (useful in CI logs) ---------------------------------------------------------
step "tools"
cargo --version
rustc --version
for t in skopeo podman containerd docker-registry jq; do
    if command -v "$t" >/dev/null 2>&1; then
        case $t in
            docker-registry) echo "docker-registry: $(dpkg-query -W -f='${Version}' docker-registry 2>/dev/null || echo present)" ;;
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

if cargo nextest --version >/dev/null 2>&1; then
    step "cargo nextest run --workspace --no-fail-fast"
    cargo nextest run --workspace --no-fail-fast
else
    step "cargo test --workspace --no-fail-fast (cargo-nextest not installed)"
    cargo test --workspace --no-fail-fast
fi

step "cargo bench --no-run"
cargo bench --no-run

step "all checks passed"
