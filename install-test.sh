#!/usr/bin/env bash
# Install what the test suite needs on top of install.sh, as root (run-tests.sh calls this): the lab's
# Debian packages (systemd-nspawn hosts, monitoring), Chromium for the report tests, Redmine for the
# ticket tests, openssl for the sealed-output tests' keys, and the Python test extras (pytest, linters,
# hatchling for the packaging test).
set -euo pipefail
cd "$(dirname "$0")"

bash ./install.sh

export DEBIAN_FRONTEND=noninteractive
# Redmine's package asks debconf questions; answer them so the install never waits.
debconf-set-selections <<'SEL'
redmine redmine/instances/default/dbconfig-install boolean true
redmine redmine/instances/default/database-type select sqlite3
redmine redmine/instances/default/default-language select en
SEL

# tzdata: the pg_log zone tests read Asia/Tokyo and America/New_York.
APT_PACKAGES=(
  git rsync tzdata systemd-container debootstrap iproute2 e2fsprogs openssl
  prometheus prometheus-alertmanager
  chromium
  redmine redmine-sqlite thin
  exim4-daemon-light
  docker.io docker-compose
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# The Debian packages start their own services; the lab starts its own copies on loopback. (docker.io's
# service does not start without systemd; the lab runs its own dockerd on its own socket.)
for svc in prometheus prometheus-alertmanager prometheus-node-exporter redmine; do
  systemctl disable --now "$svc" >/dev/null 2>&1 || true
  pkill -f "/usr/bin/$svc" >/dev/null 2>&1 || true
done

if [ "${COLLECTOR_EDITABLE:-0}" = 1 ]; then
  .venv/bin/pip install -q -e ".[test,postgres]"
else
  .venv/bin/pip install -q ".[test,postgres]"
fi
echo "test extras installed: $(.venv/bin/pytest --version 2>&1 | head -n 1)"
