#!/bin/sh
# The stand-in PostgreSQL image's entry point, after the official image's: on first start it
# creates the cluster in $PGDATA with $POSTGRES_USER as superuser (password $POSTGRES_PASSWORD,
# required over TCP) and the database $POSTGRES_DB, then runs the server as user postgres.
# The port comes from PGPORT (the server and pg_isready both read it). Any other command (psql …)
# runs as it is, as in the official image.
set -eu
[ "$#" -gt 0 ] || set -- postgres
case "$1" in
  -*) set -- postgres "$@" ;;
  postgres) ;;
  *) exec "$@" ;;
esac
if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown -R postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
  user=${POSTGRES_USER:-postgres}
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb --username="$user" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pwfile"
  db=${POSTGRES_DB:-$user}
  if [ "$db" != postgres ]; then
    echo "CREATE DATABASE \"$db\" OWNER \"$user\"" | postgres --single -j -D "$PGDATA" postgres >/dev/null
  fi
fi
exec "$@"
