#!/bin/bash
# app1: sergas-app git-deployed at /opt/sergas/app (tags v1.0.0 good, v1.1.0 bad; v1.0.0 checked out),
# its .env with the lab's secrets, a 16 MiB tmpfs data dir (disk-full), and the fake Zoho upstream.
set -euo pipefail
: "${LAB_SRC:?}" "${LAB_DB_HOST:?}" "${LAB_REDIS_HOST:?}" "${LAB_DB_PASSWORD:?}" "${LAB_REDIS_PASSWORD:?}" "${LAB_API_TOKEN:?}"
APP=/opt/sergas/app
SRC="$LAB_SRC/app"
PORT=${LAB_APP_PORT:-8000}

getent group sergas >/dev/null || groupadd --system sergas
getent passwd sergas >/dev/null || useradd --system --gid sergas --home-dir /opt/sergas --shell /usr/sbin/nologin sergas
getent passwd zoho-mock >/dev/null || useradd --system --no-create-home --shell /usr/sbin/nologin zoho-mock

# --- the release repository: two commits, two annotated tags, v1.0.0 deployed ---------------------
rm -rf "$APP"
mkdir -p "$APP"
cp -R --preserve=mode "$SRC/release/." "$APP/"
# Operators (and remediation) run git here as root or as other users.
git config --system --get-all safe.directory 2>/dev/null | grep -qx "$APP" || git config --system --add safe.directory "$APP"
commit() {  # $1 = version, $2 = message, $3 = days ago
  local when
  when="$(date -u -d "-$3 days" '+%Y-%m-%dT%H:%M:%SZ')"
  # A fresh index: the releases' files share size and mtime (a wheel or a fresh clone stamps them
  # alike), and cp overwrites in place, so git's stat check would take a changed VERSION as unchanged.
  rm -f "$APP/.git/index"
  git -C "$APP" add -A
  GIT_AUTHOR_DATE="$when" GIT_COMMITTER_DATE="$when" \
    git -C "$APP" -c user.name="Sergas Release Bot" -c user.email=release@sergas.example commit -q -m "$2"
  GIT_COMMITTER_DATE="$when" \
    git -C "$APP" -c user.name="Sergas Release Bot" -c user.email=release@sergas.example tag -a "v$1" -m "sergas-app $1"
}
git -C "$APP" init -q -b main
commit 1.0.0 "Release 1.0.0: orders, customers, Zoho contact sync" 3
cp -R --preserve=mode "$SRC/releases/v1.1.0/." "$APP/"
commit 1.1.0 "Release 1.1.0: show the discount code on orders" 1
git -C "$APP" checkout -q v1.0.0
for v in 1.0.0 1.1.0; do
  [ "$(git -C "$APP" show "v$v:VERSION")" = "$v" ] || { echo "release v$v does not hold VERSION $v" >&2; exit 1; }
done
[ "$(cat "$APP/VERSION")" = 1.0.0 ] && git -C "$APP" diff --quiet v1.0.0 -- || {
  echo "the checkout is not release v1.0.0" >&2; exit 1; }

# --- settings (secrets: root and the app's group only) ---------------------------------------------
install -o root -g sergas -m 0640 /dev/null "$APP/.env"
cat > "$APP/.env" <<ENV
# sergas-app settings (written by lab/provision/app.sh)
DATABASE_URL=postgresql://sergas:${LAB_DB_PASSWORD}@${LAB_DB_HOST}:5432/sergas
DATABASE_POOL_SIZE=10
DATABASE_POOL_TIMEOUT=5
DATABASE_STATEMENT_TIMEOUT_MS=5000
REDIS_URL=redis://:${LAB_REDIS_PASSWORD}@${LAB_REDIS_HOST}:6379/0
ZOHO_API_URL=http://127.0.0.1:8001
ZOHO_API_TOKEN=${LAB_API_TOKEN}
ZOHO_RATE_LIMIT=120
CACHE_TTL=60
DATA_DIR=/var/lib/sergas
PORT=${PORT}
ENV

# --- units: data dir (small tmpfs), fake upstream, the app ------------------------------------------
install -d -m 0755 /usr/local/lib/sergas-lab /etc/zoho-mock
install -m 0755 "$SRC/files/zoho_mock.py" /usr/local/lib/sergas-lab/zoho_mock.py
echo 600 > /etc/zoho-mock/quota
install -m 0644 "$SRC/files/zoho-mock.service" /etc/systemd/system/zoho-mock.service
sed -e "s/@UID@/$(id -u sergas)/" -e "s/@GID@/$(getent group sergas | cut -d: -f3)/" \
  "$SRC/files/var-lib-sergas.mount" > /etc/systemd/system/var-lib-sergas.mount
install -m 0644 "$SRC/files/sergas-app.service" /etc/systemd/system/sergas-app.service
mkdir -p /var/lib/sergas
systemctl daemon-reload
systemctl enable --now var-lib-sergas.mount zoho-mock.service >/dev/null 2>&1
install -d -o sergas -g sergas -m 0750 /var/lib/sergas/audit /var/lib/sergas/exports
systemctl enable sergas-app.service >/dev/null 2>&1
systemctl restart sergas-app.service

for _ in $(seq 1 60); do
  curl -fs -o /dev/null "http://127.0.0.1:${PORT}/health" && break
  sleep 0.5
done
curl -sS "http://127.0.0.1:${PORT}/health"; echo

# --- nginx in front: :80 -> the app on 127.0.0.1:${PORT} (the runbook's Tools read nginx's logs) -----
# The app's own :8000 stays as it is (Prometheus scrapes it, the lab's traffic uses it). The base ships
# nginx masked and disabled; its default site would also claim :80. Idempotent: the running lab is
# brought up to date by running this section alone (LAB_SRC and PORT set).
sed -e "s/@PORT@/${PORT}/g" "$LAB_SRC/app/files/nginx-sergas.conf" > /etc/nginx/sites-available/sergas
ln -sfn ../sites-available/sergas /etc/nginx/sites-enabled/sergas
rm -f /etc/nginx/sites-enabled/default
nginx -t -q
systemctl unmask nginx.service >/dev/null 2>&1
systemctl enable nginx.service >/dev/null 2>&1
systemctl restart nginx.service
for _ in $(seq 1 40); do
  curl -fs -o /dev/null "http://127.0.0.1/health" && break
  sleep 0.25
done
curl -fsS -o /dev/null "http://127.0.0.1/health"
# --- end nginx

echo "app: sergas-app $(git -C "$APP" describe --tags) on :${PORT}, nginx on :80"
