#!/usr/bin/env bash
# The dependency rule of docs/ARCHITECTURE.md, checked: one grep per forbidden edge between
# the crate's modules (`crate::<module>` paths in a module's files). Run by scripts/test.sh.
#
#   oci  ←  storage, metadata, cache, coordination  ←  registry  ←  api  ←  app, cli
#   oci  ←  accounts  ←  metadata (the SQL stores implement the AccountStore seam too)
#   oci  ←  accounts, cache  ←  auth  ←  api
#   oci  ←  upstream  ←  edge  ←  cli      (edge → auth: keys and tokens, to verify them)
#   oci, registry  ←  seed  ←  cli           (the benchmarks' seeding tool)
#
# telemetry, locks, limits, fileio and digesting are leaves anyone may use. config holds the settings types and
# their validation; it may name a lower component's own settings type (upstream's
# `UpstreamConfig`), and is read by the wiring (app, cli) and the edge's node builder.
set -euo pipefail
cd "$(dirname "$0")/../src"

failed=0
# forbid MODULE_PATHS... -- FORBIDDEN_MODULES...
forbid() {
    local sources=() targets=()
    while [[ $1 != -- ]]; do sources+=("$1"); shift; done
    shift
    targets=("$@")
    local pattern
    pattern="crate::($(IFS='|'; echo "${targets[*]}"))\\b"
    local hits
    if hits=$(grep -rnE "$pattern" "${sources[@]}" 2>/dev/null); then
        echo "forbidden dependency: ${sources[*]} -> ${targets[*]}" >&2
        echo "$hits" >&2
        failed=1
    fi
}

all_components=(accounts auth storage metadata cache coordination registry api upstream edge app cli config telemetry locks limits fileio digesting seed)
forbid oci -- "${all_components[@]}"
# The positioned file I/O that storage and the edge share uses nothing of the crate.
forbid fileio.rs -- accounts storage metadata cache coordination registry api upstream edge app cli config telemetry locks limits
# Hashing beside a byte stream knows only oci's hasher.
forbid digesting.rs -- accounts auth storage metadata cache coordination registry api upstream edge app cli config telemetry locks limits fileio
# The account seam knows only the protocol vocabulary (token scopes, repository names).
forbid accounts -- auth storage metadata cache coordination registry api upstream edge app cli config telemetry locks limits fileio
forbid storage -- accounts auth metadata cache coordination registry api upstream edge app cli config
forbid metadata -- auth storage cache coordination registry api upstream edge app cli config
forbid cache -- accounts auth storage metadata coordination registry api upstream edge app cli config
forbid coordination -- accounts auth storage metadata cache registry api upstream edge app cli config
# The registry's content rules know nothing of who asks: the gate in api does.
forbid registry -- accounts auth api upstream edge app cli config
# Identity and access: over the account seam and the cache, below HTTP.
forbid auth -- storage metadata coordination registry api upstream edge app cli config
forbid api -- storage metadata cache coordination upstream edge app cli config
# The upstream client streams blob bodies as `storage::ByteStream`, the crate's one byte
# stream type; nothing else of storage.
forbid upstream -- accounts auth metadata cache coordination registry api edge app cli config
forbid edge -- accounts storage metadata cache coordination registry api app cli
# A gateway verifies the cores' tokens offline: of auth, it names the keys and tokens only.
if hits=$(grep -rnE 'crate::auth\b' edge 2>/dev/null | grep -vE 'crate::auth::(keys|token)\b'); then
    echo "forbidden dependency: edge -> auth beyond auth::keys and auth::token" >&2
    echo "$hits" >&2
    failed=1
fi
forbid config.rs -- storage metadata cache coordination registry api edge app cli
# The seeding tool writes through the registry's methods, like the API, and only cli runs it.
forbid seed.rs -- accounts auth storage metadata cache coordination api upstream edge app config
if hits=$(grep -rnE 'crate::seed\b' . 2>/dev/null | grep -v '^\./cli\.rs:'); then
    echo "forbidden dependency: only cli may use seed" >&2
    echo "$hits" >&2
    failed=1
fi

# axum stays in api (and the wiring; test fakes may serve with it); SQL stays in metadata and
# coordination (PostgreSQL advisory locks).
if hits=$(grep -rnE '\baxum::' --exclude-dir=tests --exclude=tests.rs \
    registry storage metadata cache coordination oci upstream edge accounts auth 2>/dev/null); then
    echo "axum outside api:" >&2
    echo "$hits" >&2
    failed=1
fi
if hits=$(grep -rnE '\bsqlx::' --exclude-dir=metadata --exclude-dir=coordination . 2>/dev/null); then
    echo "sqlx outside metadata and coordination:" >&2
    echo "$hits" >&2
    failed=1
fi

if ((failed)); then
    exit 1
fi
echo "dependency rule: ok"
