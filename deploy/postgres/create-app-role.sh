#!/bin/sh
# PostgreSQL's image runs this once, when it creates the database (docker-entrypoint-initdb.d):
# the role the API connects as. It owns nothing; `flask grant-app-role devlab_app`, run by the
# migrate service after each upgrade, gives it what the app needs on each table.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v password="$POSTGRES_APP_PASSWORD" <<'SQL'
CREATE ROLE devlab_app LOGIN PASSWORD :'password';
GRANT CONNECT ON DATABASE devlab TO devlab_app;
SQL
