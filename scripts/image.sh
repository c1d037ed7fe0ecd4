#!/usr/bin/env bash
# Builds container images offline, from Debian's packages and binaries built here:
#
#   ./scripts/image.sh              # the runtime image (deploy/Dockerfile.runtime) → aerugo:test
#   ./scripts/image.sh --services   # also PostgreSQL, Redis and s3s-fs for the compose test
#                                   # (deploy/compose/test/Dockerfile.services) → aerugo-services:test
#
# No base image can be pulled on the machines this runs on, so each base is a Debian bookworm
# root filesystem made with debootstrap (minbase plus the packages the image needs), cached
# under ~/.cache/aerugo-image and `docker import`ed. The runtime base (aerugo-base:bookworm,
# or AERUGO_IMAGE_BASE: any image the engine has, with ca-certificates and tini) loses what a
# runtime never uses: the package manager, perl, documentation, locales. The binary goes in
# without its symbols. Prints the runtime image's size (target: under 100 MB).
#
# Environment: AERUGO_IMAGE_BINARY (default $CARGO_TARGET_DIR/release/aerugo, built when
# unset), AERUGO_IMAGE_TAG (aerugo:test), AERUGO_IMAGE_BASE, AERUGO_SERVICES_IMAGE_TAG
# (aerugo-services:test), DEBIAN_MIRROR (http://deb.debian.org/debian), AERUGO_SKIP_INSTALL=1
# (never apt-get: debootstrap must be there).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/common.sh
source scripts/common.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aerugo-target}"
BINARY=${AERUGO_IMAGE_BINARY:-$CARGO_TARGET_DIR/release/aerugo}
TAG=${AERUGO_IMAGE_TAG:-aerugo:test}
SERVICES_TAG=${AERUGO_SERVICES_IMAGE_TAG:-aerugo-services:test}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=$HOME/.cache/aerugo-image
BASE=${AERUGO_IMAGE_BASE:-aerugo-base:bookworm}
SERVICES=0
[[ ${1:-} == --services ]] && SERVICES=1

if [[ -z ${AERUGO_IMAGE_BINARY:-} ]]; then
    step "cargo build --release --bin aerugo"
    cargo build --release --bin aerugo
fi
[[ -x $BINARY ]] || die "no aerugo binary at $BINARY"

work=$(mktemp -d "${TMPDIR:-/tmp}/aerugo-image.XXXXXX")
trap 'rm -rf "$work"' EXIT

# What a runtime image never needs, purged through dpkg (so its database says what is
# there): the package manager, its keyring and crypto, perl (only maintainer scripts use it)
# and the time-zone data.
RUNTIME_PURGE=(apt libapt-pkg6.0 gpgv debian-archive-keyring libgnutls30 libp11-kit0
    libtasn1-6 libnettle8 libhogweed6 libstdc++6 e2fsprogs tzdata perl-base)

# import_debian_base IMAGE NAME PACKAGES [PURGE...]: IMAGE from a bookworm minbase root
# filesystem with PACKAGES (comma-separated), PURGE removed, without documentation, locales,
# iconv modules and caches; the root filesystem is made once per machine ($CACHE/NAME.tar).
import_debian_base() {
    local image=$1 name=$2 packages=$3 tarball=$CACHE/$2.tar root=$work/$2
    shift 3
    docker image inspect "$image" >/dev/null 2>&1 && return
    if [[ ! -s $tarball ]]; then
        install_packages debootstrap debian-archive-keyring || die "debootstrap is needed to make $image"
        step "debootstrap bookworm (minbase, $packages) from $MIRROR"
        debootstrap --variant=minbase --include="$packages" bookworm "$root" "$MIRROR"
        if (($#)); then
            chroot "$root" dpkg --purge --force-depends --force-remove-essential \
                --force-remove-protected "$@"
        fi
        rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
            "$root"/usr/share/locale/* "$root"/usr/lib/*-linux-gnu/gconv \
            "$root"/var/cache/* "$root"/var/lib/apt/lists "$root"/var/log/*
        mkdir -p "$CACHE"
        tar --numeric-owner -C "$root" -cf "$tarball.partial" .
        mv "$tarball.partial" "$tarball"
        rm -rf "$root"
    fi
    step "docker import $tarball as $image"
    docker import "$tarball" "$image" >/dev/null
}

# build DOCKERFILE TAG BASE FILE...: the image from a context holding only FILE...
build() {
    local dockerfile=$1 tag=$2 base=$3 context=$work/context-${2//[:\/]/-}
    shift 3
    step "docker build -f $dockerfile --build-arg BASE=$base -t $tag"
    mkdir -p "$context"
    cp "$@" "$context/"
    docker build --quiet -f "$dockerfile" --build-arg "BASE=$base" -t "$tag" "$context" >/dev/null
}

mb() { echo $(($(docker image inspect --format '{{.Size}}' "$1") / 1000000)); }

if [[ -n ${AERUGO_IMAGE_BASE:-} ]]; then
    docker image inspect "$BASE" >/dev/null 2>&1 || die "AERUGO_IMAGE_BASE=$BASE: no such image in the engine"
else
    import_debian_base "$BASE" bookworm-rootfs ca-certificates,tini "${RUNTIME_PURGE[@]}"
fi
# Without symbols (54 MB → 43 MB): a panic still reports its message and source location, only
# its backtrace loses function names.
objcopy --strip-all "$BINARY" "$work/aerugo"
build deploy/Dockerfile.runtime "$TAG" "$BASE" "$work/aerugo" deploy/image/setup-runtime.sh
echo "$TAG: $(mb "$TAG") MB (base $BASE: $(mb "$BASE") MB, binary $(($(stat -c %s "$work/aerugo") / 1000000)) MB)"
(($(mb "$TAG") < 100)) || warn "$TAG is $(mb "$TAG") MB: over the 100 MB target"

if ((SERVICES)); then
    s3s_fs=$(command -v s3s-fs) || die "s3s-fs is not installed (scripts/services.sh installs it)"
    import_debian_base aerugo-services-base:bookworm bookworm-services-rootfs \
        postgresql,redis-server,ca-certificates
    build deploy/compose/test/Dockerfile.services "$SERVICES_TAG" aerugo-services-base:bookworm \
        "$s3s_fs" deploy/compose/test/postgres.sh
    echo "$SERVICES_TAG: $(mb "$SERVICES_TAG") MB"
fi
