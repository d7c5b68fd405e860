#!/bin/sh
# Write PgBouncer's auth_file from the environment, then run PgBouncer in the foreground.
# auth_file's format: "user" "password", a double quote inside a value doubled.
set -eu

: "${POSTGRES_USER:?set POSTGRES_USER}"
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"

quote() {
    printf '"%s"' "$(printf '%s' "$1" | sed 's/"/""/g')"
}

umask 077
mkdir -p /tmp/pgbouncer
printf '%s %s\n' "$(quote "$POSTGRES_USER")" "$(quote "$POSTGRES_PASSWORD")" \
    > /tmp/pgbouncer/userlist.txt

exec pgbouncer /etc/pgbouncer/pgbouncer.ini
