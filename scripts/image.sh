#!/usr/bin/env bash
# Builds the runtime image (deploy/Dockerfile.runtime) around an aerugo binary, offline:
#
#   ./scripts/image.sh            # the release binary (built when missing) → aerugo:test
#
# The base is AERUGO_IMAGE_BASE when set (an image the engine already has); otherwise a Debian
# bookworm root filesystem made with debootstrap from Debian's packages (minbase, plus
# ca-certificates and tini), without documentation and package lists, cached under
# ~/.cache/aerugo-image and `docker import`ed as aerugo-base:bookworm. No base image can be
# pulled on the machines this runs on. The binary goes in without its symbols. Prints
# the image's size (target: under 100 MB).
#
# Environment: AERUGO_IMAGE_BINARY (default $CARGO_TARGET_DIR/release/aerugo), AERUGO_IMAGE_TAG
# (aerugo:test), AERUGO_IMAGE_BASE, DEBIAN_MIRROR (http://deb.debian.org/debian),
# AERUGO_SKIP_INSTALL=1 (never apt-get: debootstrap must be there).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/common.sh
source scripts/common.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aerugo-target}"
BINARY=${AERUGO_IMAGE_BINARY:-$CARGO_TARGET_DIR/release/aerugo}
TAG=${AERUGO_IMAGE_TAG:-aerugo:test}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=$HOME/.cache/aerugo-image
BASE=${AERUGO_IMAGE_BASE:-aerugo-base:bookworm}

if [[ -z ${AERUGO_IMAGE_BINARY:-} ]]; then
    step "cargo build --release --bin aerugo"
    cargo build --release --bin aerugo
fi
[[ -x $BINARY ]] || die "no aerugo binary at $BINARY"

work=$(mktemp -d "${TMPDIR:-/tmp}/aerugo-image.XXXXXX")
trap 'rm -rf "$work"' EXIT

# A root filesystem from Debian's packages, made once per machine.
ROOTFS=$CACHE/bookworm-rootfs.tar
make_debian_rootfs() {
    local root=$work/root
    install_packages debootstrap debian-archive-keyring || die "debootstrap is needed to make the base"
    step "debootstrap bookworm (minbase, ca-certificates, tini) from $MIRROR"
    debootstrap --variant=minbase --include=ca-certificates,tini bookworm "$root" "$MIRROR"
    # A runtime image installs no packages: the package manager, its keyring and crypto, perl
    # (only maintainer scripts use it) and the time-zone data go (through dpkg, so its
    # database says what is there), then documentation, locales, iconv modules and caches.
    chroot "$root" dpkg --purge --force-depends --force-remove-essential --force-remove-protected \
        apt libapt-pkg6.0 gpgv debian-archive-keyring libgnutls30 libp11-kit0 libtasn1-6 \
        libnettle8 libhogweed6 libstdc++6 e2fsprogs tzdata perl-base
    rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
        "$root"/usr/share/locale/* "$root"/usr/lib/*-linux-gnu/gconv \
        "$root"/var/cache/* "$root"/var/lib/apt/lists "$root"/var/log/*
    mkdir -p "$CACHE"
    tar --numeric-owner -C "$root" -cf "$ROOTFS.partial" .
    mv "$ROOTFS.partial" "$ROOTFS"
    rm -rf "$root"
}

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
    [[ -z ${AERUGO_IMAGE_BASE:-} ]] || die "AERUGO_IMAGE_BASE=$BASE: no such image in the engine"
    [[ -s $ROOTFS ]] || make_debian_rootfs
    step "docker import $ROOTFS as $BASE"
    docker import "$ROOTFS" "$BASE" >/dev/null
fi

step "docker build -f deploy/Dockerfile.runtime --build-arg BASE=$BASE -t $TAG"
# Without symbols (54 MB → 43 MB): a panic still reports its message and source location, only
# its backtrace loses function names.
objcopy --strip-all "$BINARY" "$work/aerugo"
cp deploy/image/setup-runtime.sh "$work/"
docker build --quiet -f deploy/Dockerfile.runtime --build-arg "BASE=$BASE" -t "$TAG" "$work" >/dev/null

size=$(docker image inspect --format '{{.Size}}' "$TAG")
mb=$((size / 1000000))
echo "$TAG: $mb MB (base $BASE: $(($(docker image inspect --format '{{.Size}}' "$BASE") / 1000000)) MB, binary $(($(stat -c %s "$work/aerugo") / 1000000)) MB)"
((mb < 100)) || warn "$TAG is $mb MB: over the 100 MB target"
