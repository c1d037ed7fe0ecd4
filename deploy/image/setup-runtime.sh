#!/bin/sh
# The runtime image's one set-up step, shared by deploy/Dockerfile (on debian:bookworm-slim)
# and deploy/Dockerfile.runtime (on any Debian base): a system user the registry runs as, and
# its data directory. The base must already have ca-certificates and tini.
set -eu
groupadd --system --gid 10001 aerugo
useradd --system --uid 10001 --gid aerugo --home-dir /var/lib/aerugo --shell /usr/sbin/nologin aerugo
install -d -o aerugo -g aerugo -m 0750 /var/lib/aerugo
# What a runtime image never needs: package documentation and caches.
rm -rf /usr/share/doc/* /usr/share/man/* /usr/share/info/* /var/cache/apt/* /var/lib/apt/lists/*
