#!/usr/bin/env bash
# Install what the tool needs to run on Debian 12, as root: the Debian packages the control machine's own
# probes use (`collect --hosts local`) and the Python package itself (non-editable, into ./.venv).
# The test suite's extras (lab, monitoring, browser, Redmine, linters) come from install-test.sh.
set -euo pipefail
cd "$(dirname "$0")"

if [ "$(id -u)" != 0 ]; then
  echo "error: install.sh must run as root (it installs Debian packages)" >&2
  exit 2
fi

export DEBIAN_FRONTEND=noninteractive
# python3-venv: ./.venv; openssh-client: the ssh and ansible engines, verify's host checks;
# sysstat (iostat), procps (uptime, top, free, ps), util-linux (dmesg, runuser), curl (/health):
# what the catalogue's every-host probes run on `local`.
APT_PACKAGES=(
  python3 python3-venv ca-certificates openssh-client
  sysstat procps util-linux curl
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
if [ "${COLLECTOR_EDITABLE:-0}" = 1 ]; then
  .venv/bin/pip install -q -e .
else
  .venv/bin/pip install -q .
fi
echo "installed: $(.venv/bin/collector --version)"
