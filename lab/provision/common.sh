#!/bin/bash
# Every lab host: a persistent journal, sysstat collecting, UTC, and the lab's helper folder.
# Runs inside the host as root, once per fresh overlay, without internet access (see collector/lab/hosts.py).
set -euo pipefail

# Persistent journal: the runbook's evidence survives a restart of the host.
mkdir -p /var/log/journal /etc/systemd/journald.conf.d
cat > /etc/systemd/journald.conf.d/50-lab.conf <<'CONF'
[Journal]
Storage=persistent
SystemMaxUse=64M
RateLimitIntervalSec=0
CONF
systemd-tmpfiles --create --prefix /var/log/journal >/dev/null 2>&1 || true
systemctl restart systemd-journald
journalctl --flush >/dev/null 2>&1 || true

# sysstat: sar history for the probes (the package ships it disabled).
if [ -f /etc/default/sysstat ]; then
  sed -i 's/^ENABLED=.*/ENABLED="true"/' /etc/default/sysstat
  systemctl enable --now sysstat >/dev/null 2>&1 || true
fi

ln -sf /usr/share/zoneinfo/UTC /etc/localtime
echo "common: ${LAB_HOST:-?} provisioned (journal persistent, sysstat on)"
