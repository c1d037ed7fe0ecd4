#!/usr/bin/env bash
# Installs and starts the services the backend tests use, at the addresses src/testkit.rs
# expects, idempotently (a running service is left alone; a stopped one is started again):
#
#   PostgreSQL  127.0.0.1:5432  role aerugo / password aerugo (SUPERUSER: tests create
#                               schemas), database aerugo
#   Redis       127.0.0.1:6379 (and the redis-server program, for the tests' TLS servers)
#   S3 (s3s-fs) 127.0.0.1:9100  access key aerugo, secret aerugo-secret
#   S3 (Garage) 127.0.0.1:9101  access key aerugo-garage, secret aerugo-garage-secret: the
#                               server that lists multipart uploads (s3s-fs cannot), for the
#                               abandoned-multipart tests; its RPC port is 127.0.0.1:9102
#
#   ./scripts/services.sh [postgres] [redis] [s3] [garage]     (default: all four)
#
# Made for Debian 12 with a Rust toolchain: PostgreSQL and Redis come from apt, s3s-fs and
# Garage from `cargo install` (about 6 and 15 minutes once; the binaries stay in ~/.cargo/bin,
# their builds in ~/.cache/aerugo-s3s-fs-target and ~/.cache/aerugo-garage-target).
# scripts/test.sh calls it.
#
# Environment:
#   AERUGO_REQUIRE_TOOLS    default 1: a service that cannot be installed or started is an
#                           error (exit 1); empty or 0 makes it a warning
#   AERUGO_SKIP_INSTALL=1   never call apt-get or cargo install
#   AERUGO_SERVICES_DIR     logs and data of the services started here
#                           (default ~/.cache/aerugo-services)
#   AERUGO_TEST_POSTGRES_URL, AERUGO_TEST_REDIS_URL, AERUGO_TEST_S3_ENDPOINT,
#   AERUGO_TEST_S3_MULTIPART_ENDPOINT
#                           a service the caller provides elsewhere: left alone here
#   AERUGO_TEST_REDIS_SERVER
#                           the redis-server the TLS tests start (default: Debian's, which
#                           is installed here)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/common.sh
source scripts/common.sh

AERUGO_REQUIRE_TOOLS="${AERUGO_REQUIRE_TOOLS-1}"
SERVICES_DIR="${AERUGO_SERVICES_DIR:-$HOME/.cache/aerugo-services}"
S3S_VERSION=0.14.1
GARAGE_VERSION=2.5.0

# A service that is not there: an error under AERUGO_REQUIRE_TOOLS, else a warning.
unavailable() {
    if [[ -n "$AERUGO_REQUIRE_TOOLS" && "$AERUGO_REQUIRE_TOOLS" != 0 ]]; then
        printf '\033[31merror: %s (AERUGO_REQUIRE_TOOLS is set)\033[0m\n' "$*" >&2
        exit 1
    fi
    warn "$*; the tests that need it will skip"
}

# The last lines of a service's log, to say why it did not start.
show_log() {
    if [[ -f $1 ]]; then
        echo "--- last lines of $1:" >&2
        tail -n 20 "$1" >&2
    fi
}

# --- PostgreSQL ---------------------------------------------------------------------------
# Whether the test role can log in over TCP, as the tests do, and is a superuser.
aerugo_role_ok() {
    command -v psql >/dev/null 2>&1 &&
        [[ "$(PGPASSWORD=aerugo PGCONNECT_TIMEOUT=5 psql -X -tA -h 127.0.0.1 -p 5432 \
            -U aerugo -d aerugo -c 'SELECT rolsuper FROM pg_roles WHERE rolname = current_user' \
            2>/dev/null)" == t ]]
}

# The newest local cluster's version (Debian's layout: /etc/postgresql/<version>/main).
local_cluster_version() {
    # shellcheck disable=SC2012 # version directories are plain numbers
    ls /etc/postgresql 2>/dev/null | sort -V | tail -n1
}

start_local_postgres() {
    command -v pg_ctlcluster >/dev/null 2>&1 || install_packages postgresql ||
        return 1
    local version
    version="$(local_cluster_version)"
    if [[ -z $version ]]; then
        # The package makes a cluster on install; a removed one is made again.
        # shellcheck disable=SC2012 # version directories are plain numbers
        version="$(ls /usr/lib/postgresql | sort -V | tail -n1)"
        as_root pg_createcluster "$version" main || return 1
    fi
    echo "postgresql: starting cluster $version/main"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    wait_for_port 5432 30 || {
        show_log "/var/log/postgresql/postgresql-$version-main.log"
        return 1
    }
}

create_aerugo_role() {
    echo "postgresql: creating role and database aerugo"
    # As the cluster's superuser: the postgres account, by peer authentication.
    (cd / && as_root runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1) <<'SQL' || return 1
SELECT 'CREATE ROLE aerugo'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'aerugo') \gexec
ALTER ROLE aerugo LOGIN SUPERUSER PASSWORD 'aerugo';
SELECT 'CREATE DATABASE aerugo OWNER aerugo'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'aerugo') \gexec
SQL
}

ensure_postgres() {
    if [[ -n "${AERUGO_TEST_POSTGRES_URL:-}" ]]; then
        echo "postgresql: AERUGO_TEST_POSTGRES_URL is set; not managed here"
        return
    fi
    if port_open 5432; then
        echo "postgresql: up"
    else
        start_local_postgres || {
            unavailable "PostgreSQL could not be installed or started on 127.0.0.1:5432"
            return
        }
    fi
    command -v psql >/dev/null 2>&1 || install_packages postgresql-client || true
    if aerugo_role_ok; then
        echo "postgresql: role aerugo ok"
        return
    fi
    if [[ -n "$(local_cluster_version)" ]] && create_aerugo_role && aerugo_role_ok; then
        echo "postgresql: role aerugo ok"
        return
    fi
    unavailable "PostgreSQL answers on 127.0.0.1:5432 but the role aerugo (password aerugo," \
        "SUPERUSER) cannot log in to the database aerugo, and it could not be created here"
}

# --- Redis --------------------------------------------------------------------------------
redis_answers() {
    (
        exec 3<>/dev/tcp/127.0.0.1/6379 &&
            printf 'PING\r\n' >&3 &&
            IFS= read -r -t 2 reply <&3 &&
            [[ $reply == +PONG* ]]
    ) 2>/dev/null
}

ensure_redis() {
    # The TLS tests start a redis-server of their own, wherever the shared Redis runs.
    if [[ -z "${AERUGO_TEST_REDIS_SERVER:-}" ]] && ! command -v redis-server >/dev/null 2>&1; then
        install_packages redis-server || unavailable "redis-server could not be installed"
    fi
    if [[ -n "${AERUGO_TEST_REDIS_URL:-}" ]]; then
        echo "redis: AERUGO_TEST_REDIS_URL is set; not managed here"
        return
    fi
    if redis_answers; then
        echo "redis: up"
        return
    fi
    if port_open 6379; then
        unavailable "something listens on 127.0.0.1:6379 but does not answer PING like Redis"
        return
    fi
    command -v redis-server >/dev/null 2>&1 || return 0
    local dir="$SERVICES_DIR/redis"
    mkdir -p "$dir"
    echo "redis: starting (log: $dir/redis.log)"
    # A throwaway cache for tests: no persistence.
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
        --appendonly no --dir "$dir" --logfile "$dir/redis.log" || true
    local deadline=$((SECONDS + 15))
    until redis_answers; do
        if ((SECONDS >= deadline)); then
            show_log "$dir/redis.log"
            unavailable "Redis did not start on 127.0.0.1:6379"
            return
        fi
        sleep 0.2
    done
    echo "redis: up"
}

# --- S3 servers from crates.io ------------------------------------------------------------
# already_there LABEL VARIABLE PORT: true, saying so, when the caller provides the service
# elsewhere (VARIABLE is set) or something answers on 127.0.0.1:PORT already.
already_there() {
    if [[ -n "${!2:-}" ]]; then
        echo "$1: $2 is set; not managed here"
    elif port_open "$3"; then
        echo "$1: up"
    else
        return 1
    fi
}

# The path of the installed binary NAME: on PATH or in cargo's bin directory.
cargo_binary() {
    command -v "$1" 2>/dev/null || {
        local installed="${CARGO_HOME:-$HOME/.cargo}/bin/$1"
        [[ -x $installed ]] && echo "$installed"
    }
}

# cargo_install_once BINARY MINUTES CARGO-INSTALL-ARGS...: installs the crate that has BINARY
# unless it is there, one install at a time (a second caller waits, then finds the binary).
# The build stays in ~/.cache/aerugo-BINARY-target.
cargo_install_once() {
    local binary=$1 minutes=$2
    shift 2
    [[ -n "$(cargo_binary "$binary")" ]] && return 0
    if [[ "${AERUGO_SKIP_INSTALL:-0}" == 1 ]]; then
        warn "$binary is missing (AERUGO_SKIP_INSTALL=1, not installing)"
        return 1
    fi
    mkdir -p "$SERVICES_DIR"
    (
        flock 9
        [[ -n "$(cargo_binary "$binary")" ]] && exit 0
        echo "$binary: cargo install $* (about $minutes minutes once)"
        CARGO_TARGET_DIR="$HOME/.cache/aerugo-$binary-target" cargo install "$@" --locked
    ) 9>"$SERVICES_DIR/$binary-install.lock"
}

# --- S3 (s3s-fs) --------------------------------------------------------------------------
ensure_s3() {
    already_there s3 AERUGO_TEST_S3_ENDPOINT 9100 && return
    cargo_install_once s3s-fs 6 s3s-fs --version "$S3S_VERSION" --features binary || {
        unavailable "s3s-fs $S3S_VERSION could not be installed"
        return
    }
    local dir="$SERVICES_DIR/s3"
    mkdir -p "$dir/data"
    echo "s3: starting s3s-fs (log: $dir/s3s.log, data: $dir/data)"
    # Started in its own directory: s3s-fs resolves paths against its working directory, and
    # the caller's (a checkout, a worktree) may be deleted while the server runs.
    (cd "$dir" && exec setsid nohup "$(cargo_binary s3s-fs)" --host 127.0.0.1 --port 9100 \
        --access-key aerugo --secret-key aerugo-secret "$dir/data") \
        >"$dir/s3s.log" 2>&1 </dev/null &
    wait_for_port 9100 15 || {
        show_log "$dir/s3s.log"
        unavailable "s3s-fs did not start on 127.0.0.1:9100"
        return
    }
    echo "s3: up"
}

# --- S3 with multipart listings (Garage) --------------------------------------------------
# A single-node Garage, for the tests s3s-fs cannot serve (ListMultipartUploads). Its
# configuration is written once; the RPC secret only guards the loopback RPC port.
write_garage_config() {
    local dir=$1 config=$1/garage.toml
    [[ -f $config ]] && return
    local secret
    secret="$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
    cat >"$config" <<TOML
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:9102"
rpc_public_addr = "127.0.0.1:9102"
rpc_secret = "$secret"

[s3_api]
api_bind_addr = "127.0.0.1:9101"
s3_region = "us-east-1"
TOML
    chmod 600 "$config"
}

ensure_garage() {
    already_there garage AERUGO_TEST_S3_MULTIPART_ENDPOINT 9101 && return
    # The SQLite metadata engine only (no LMDB, metrics, K2V), against Debian's libsodium,
    # zstd and SQLite instead of building them, and unoptimised without debug info: a test
    # server, about 7 CPU-minutes to build here where a release build with bundled C
    # libraries took over half an hour.
    if [[ -z "$(cargo_binary garage)" ]]; then
        install_packages pkg-config libsodium-dev libzstd-dev libsqlite3-dev ||
            warn "Garage's build libraries are missing"
    fi
    CARGO_PROFILE_DEV_DEBUG=0 cargo_install_once garage 10 garage --version "$GARAGE_VERSION" \
        --debug --no-default-features --features system-libs,sqlite || {
        unavailable "Garage $GARAGE_VERSION could not be installed"
        return
    }
    local dir="$SERVICES_DIR/garage"
    mkdir -p "$dir/meta" "$dir/data"
    write_garage_config "$dir"
    echo "garage: starting (log: $dir/garage.log, data: $dir)"
    # --single-node makes the one-node layout on first start; --default-access-key creates
    # the key (allowed to create buckets) from the environment, or checks it.
    (cd "$dir" && GARAGE_DEFAULT_ACCESS_KEY=aerugo-garage GARAGE_DEFAULT_SECRET_KEY=aerugo-garage-secret \
        exec setsid nohup "$(cargo_binary garage)" -c "$dir/garage.toml" server \
        --single-node --default-access-key) >"$dir/garage.log" 2>&1 </dev/null &
    wait_for_port 9101 30 || {
        show_log "$dir/garage.log"
        unavailable "Garage did not start on 127.0.0.1:9101"
        return
    }
    echo "garage: up"
}

main() {
    local services=("$@")
    ((${#services[@]})) || services=(postgres redis s3 garage)
    local s
    for s in "${services[@]}"; do
        case $s in
            postgres) ensure_postgres ;;
            redis) ensure_redis ;;
            s3) ensure_s3 ;;
            garage) ensure_garage ;;
            *)
                echo "unknown service: $s (postgres, redis, s3, garage)" >&2
                exit 2
                ;;
        esac
    done
}

# Sourcing the file (to run one function by hand) defines everything and starts nothing.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
