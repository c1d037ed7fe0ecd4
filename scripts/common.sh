# shellcheck shell=bash
# Shell helpers shared by scripts/test.sh and scripts/services.sh. Source it; it runs nothing.
#
#   AERUGO_SKIP_INSTALL=1   install_packages never calls apt-get

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
warn() { printf '\033[33mwarning: %s\033[0m\n' "$*" >&2; }
die() { printf '\033[31merror: %s\033[0m\n' "$*" >&2; exit 1; }

is_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# Runs a command as root: directly, through sudo, or not at all (non-zero).
as_root() {
    if [[ "$(id -u)" == 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        return 1
    fi
}

# install_packages PKG...: installs those of the Debian packages PKG that are missing.
# Returns non-zero, after saying why, when some could not be installed.
install_packages() {
    if ! command -v dpkg-query >/dev/null 2>&1; then
        warn "not a Debian system (no dpkg-query): cannot install $*"
        return 1
    fi
    local missing=() p
    for p in "$@"; do
        is_installed "$p" || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    if [[ "${AERUGO_SKIP_INSTALL:-0}" == 1 ]]; then
        warn "missing packages (AERUGO_SKIP_INSTALL=1, not installing): ${missing[*]}"
        return 1
    fi
    if [[ "$(id -u)" != 0 ]] && ! command -v sudo >/dev/null 2>&1; then
        warn "not root and no sudo: cannot install ${missing[*]}"
        return 1
    fi
    echo "installing: ${missing[*]}"
    # Packages such as docker-registry, containerd, postgresql and redis-server ship a service
    # that would start on install (and take its port); a policy-rc.d that denies starts is the
    # Debian way to say no. The services the tests need are started by scripts/services.sh.
    local policy_rc_d=/usr/sbin/policy-rc.d created_policy=0 rc=0
    if [[ ! -e $policy_rc_d ]]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy_rc_d" >/dev/null
        as_root chmod 755 "$policy_rc_d"
        created_policy=1
    fi
    {
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            as_root env DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -qq --no-install-recommends "${missing[@]}"
    } || rc=$?
    if ((created_policy)); then as_root rm -f "$policy_rc_d"; fi
    if ((rc)); then
        warn "apt-get failed (exit $rc) installing: ${missing[*]}"
        return "$rc"
    fi
}

# Whether something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_for_port PORT SECONDS: until the port answers; non-zero when it never does.
wait_for_port() {
    local deadline=$((SECONDS + $2))
    until port_open "$1"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}
