#!/bin/bash
# db1: PostgreSQL 15 with the app's database `sergas` and user `sergas` (password auth from the app host),
# max_connections small so the pool-exhausted fault can reach it, slow statements logged.
set -euo pipefail
: "${LAB_IP:?}" "${LAB_APP_HOST:?}" "${LAB_DB_PASSWORD:?}" "${LAB_SRC:?}"
DB=${LAB_DB_NAME:-sergas}
USER_=${LAB_DB_USER:-sergas}
CONF=/etc/postgresql/15/main

cat > "$CONF/conf.d/50-lab.conf" <<CONF
# Written by lab/provision/db.sh
listen_addresses = '127.0.0.1,${LAB_IP}'
max_connections = 30
superuser_reserved_connections = 3
shared_buffers = 64MB
log_min_duration_statement = 100ms
log_lock_waits = on
deadlock_timeout = 1s
log_connections = off
log_line_prefix = '%m [%p] %q%u@%d app=%a '
jit = on
CONF

# Password (scram) auth for the app user, from the app host and from this host.
if ! grep -q "lab: sergas-app" "$CONF/pg_hba.conf"; then
  cat >> "$CONF/pg_hba.conf" <<HBA
# lab: sergas-app
host    ${DB}    ${USER_}    ${LAB_APP_HOST}/32    scram-sha-256
host    ${DB}    ${USER_}    127.0.0.1/32          scram-sha-256
HBA
fi
# The compose host's app container (collector_lab.compose) comes from its own subnet, routed via the machine.
if [ -n "${LAB_COMPOSE_SUBNET:-}" ] && ! grep -q "lab: sergas-app on compose" "$CONF/pg_hba.conf"; then
  cat >> "$CONF/pg_hba.conf" <<HBA
# lab: sergas-app on compose
host    ${DB}    ${USER_}    ${LAB_COMPOSE_SUBNET}    scram-sha-256
HBA
fi

systemctl enable postgresql >/dev/null 2>&1
systemctl restart postgresql
for _ in $(seq 1 60); do
  runuser -u postgres -- pg_isready -q -h 127.0.0.1 && break
  sleep 0.5
done

# The password goes through stdin, never argv; statement logging is off for this session.
runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 <<SQL
SET log_min_duration_statement = -1;
SET log_statement = 'none';
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '${USER_}') THEN
    CREATE ROLE ${USER_} LOGIN;
  END IF;
END \$\$;
ALTER ROLE ${USER_} WITH LOGIN PASSWORD '${LAB_DB_PASSWORD}';
SQL
if ! runuser -u postgres -- psql -tAc "SELECT 1 FROM pg_database WHERE datname = '${DB}'" | grep -q 1; then
  runuser -u postgres -- createdb -O "$USER_" "$DB"
fi
runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 -d "$DB" <<SQL
SET log_min_duration_statement = -1;
SET ROLE ${USER_};
\i ${LAB_SRC}/app/files/schema.sql
SQL
echo "db: database ${DB} ready ($(runuser -u postgres -- psql -tAd "$DB" -c 'SELECT count(*) FROM orders') orders)"
