#!/bin/sh
# Write PgBouncer's auth_file from the environment, then run PgBouncer in the foreground:
# PGBOUNCER_USER and PGBOUNCER_PASSWORD are the login it accepts from DevLab and uses towards
# PostgreSQL. auth_file's format: "user" "password", a double quote inside a value doubled.
set -eu

: "${PGBOUNCER_USER:?set PGBOUNCER_USER}"
: "${PGBOUNCER_PASSWORD:?set PGBOUNCER_PASSWORD}"

quote() {
    printf '"%s"' "$(printf '%s' "$1" | sed 's/"/""/g')"
}

umask 077
mkdir -p /tmp/pgbouncer
printf '%s %s\n' "$(quote "$PGBOUNCER_USER")" "$(quote "$PGBOUNCER_PASSWORD")" \
    > /tmp/pgbouncer/userlist.txt

exec pgbouncer /etc/pgbouncer/pgbouncer.ini
