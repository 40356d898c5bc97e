#!/bin/sh
# The PostgreSQL image runs this once, when it initialises its data (docker-entrypoint-initdb.d;
# docker-compose.ha.yml). Two roles besides the image's superuser (POSTGRES_USER, kept for
# administration; no service logs in as it) (#20 item 5):
#
#   ivr_owner    owns the database and its schema: `ivr-vault store migrate` (vault-init),
#                restore. Its migrations grant ivr_runtime the DML on every table.
#   ivr_backend  the backends: a member of ivr_runtime, so DML on the tables and nothing
#                else (no CREATE, ALTER, DROP, TRUNCATE, COPY ... TO PROGRAM, pg_read_file).
#
# The passwords are read from db-secret's files by psql itself (\set with backquotes), so
# they are on no command line.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<'SQL'
\set owner_password `cat /db-secret/owner-password`
\set backend_password `cat /db-secret/backend-password`
CREATE ROLE ivr_runtime NOLOGIN;
CREATE ROLE ivr_owner LOGIN PASSWORD :'owner_password';
CREATE ROLE ivr_backend LOGIN PASSWORD :'backend_password' IN ROLE ivr_runtime;
ALTER DATABASE ivr OWNER TO ivr_owner;
SQL
