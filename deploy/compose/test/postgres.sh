#!/bin/sh
# PostgreSQL run the way the postgres image runs it: on first start the cluster is made with
# the superuser POSTGRES_USER (password POSTGRES_PASSWORD, scram-sha-256 over TCP) and the
# database POSTGRES_DB; then the server runs as `postgres`, listening on every address, with
# the arguments given after the first (`postgres -c …`, as docker-compose.yml passes them).
set -eu
data=/var/lib/postgresql/data
bin=/usr/lib/postgresql/15/bin
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
install -d -o postgres -g postgres -m 2775 /var/run/postgresql
if [ ! -s "$data/PG_VERSION" ]; then
    install -d -o postgres -g postgres -m 0700 "$data"
    printf '%s\n' "$POSTGRES_PASSWORD" >/tmp/pwfile
    chown postgres /tmp/pwfile
    as_postgres "$bin/initdb" -D "$data" -U "$POSTGRES_USER" --pwfile=/tmp/pwfile \
        --auth-local=trust --auth-host=scram-sha-256
    rm -f /tmp/pwfile
    echo "host all all all scram-sha-256" >>"$data/pg_hba.conf"
    as_postgres "$bin/pg_ctl" -D "$data" -o "-c listen_addresses=''" -w start
    as_postgres "$bin/createdb" -U "$POSTGRES_USER" "$POSTGRES_DB"
    as_postgres "$bin/pg_ctl" -D "$data" -m fast -w stop
fi
shift
exec setpriv --reuid=postgres --regid=postgres --init-groups "$bin/postgres" -D "$data" \
    -c listen_addresses='*' "$@"
