#!/bin/bash
# Light hosts for scale tests: systemd and sshd only (common.sh did the rest).
set -euo pipefail
echo "web: ${LAB_HOST:-?} has nothing more to install"
