#!/usr/bin/env bash
# Install everything incident collector and its test suite need on Debian 12, as root:
# Debian packages (lab, monitoring, browser for report tests, Redmine for ticket tests)
# and the Python package itself (non-editable, into ./.venv).
set -euo pipefail
cd "$(dirname "$0")"

if [ "$(id -u)" != 0 ]; then
  echo "error: install.sh must run as root (it installs Debian packages)" >&2
  exit 2
fi

export DEBIAN_FRONTEND=noninteractive
# Redmine's package asks debconf questions; answer them so the install never waits.
debconf-set-selections <<'SEL'
redmine redmine/instances/default/dbconfig-install boolean true
redmine redmine/instances/default/database-type select sqlite3
redmine redmine/instances/default/default-language select en
SEL

APT_PACKAGES=(
  python3 python3-venv python3-pip git curl ca-certificates openssh-client rsync tzdata
  systemd-container debootstrap iproute2 sysstat procps util-linux e2fsprogs
  prometheus prometheus-alertmanager
  chromium
  redmine redmine-sqlite thin
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# The Debian packages start their own services; the lab starts its own copies on loopback.
for svc in prometheus prometheus-alertmanager prometheus-node-exporter redmine; do
  systemctl disable --now "$svc" >/dev/null 2>&1 || true
  pkill -f "/usr/bin/$svc" >/dev/null 2>&1 || true
done

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
if [ "${COLLECTOR_EDITABLE:-0}" = 1 ]; then
  .venv/bin/pip install -q -e ".[test]"
else
  .venv/bin/pip install -q ".[test]"
fi
echo "installed: $(.venv/bin/collector --version)"
