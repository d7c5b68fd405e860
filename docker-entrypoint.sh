#!/bin/sh
# Container start: bring the schema up to date, then serve with gunicorn. Arguments replace
# gunicorn, so one-off commands see a migrated database too:
#   docker compose run --rm api flask promote-admin alice
set -eu

cd "$(dirname "$0")"
export FLASK_APP="${FLASK_APP:-wsgi}"

flask db upgrade

if [ "$#" -eq 0 ]; then
    set -- gunicorn --config gunicorn.conf.py wsgi:app
fi
exec "$@"
