#!/usr/bin/env bash
# Install everything, build and boot the lab, run the whole test suite, tear the lab down.
# This is the README's test command and what CI runs (.ci/run).
set -uo pipefail
cd "$(dirname "$0")"

bash ./install-test.sh || exit $?  # install.sh (the tool) plus the lab's packages and the test extras
# The test lab is its own distribution (lab/): installed beside the product, editable like it.
if [ "${COLLECTOR_EDITABLE:-0}" = 1 ]; then
  .venv/bin/pip install -q -e ./lab || exit $?
else
  .venv/bin/pip install -q ./lab || exit $?
fi
export PATH="$PWD/.venv/bin:$PATH"

# Lint before the lab boots: a style or type error fails fast, with nothing to tear down.
ruff check collector lab/collector_lab tests bench playbooks || exit $?
mypy || exit $?  # strict, on collector/ (pyproject.toml)
ansible-lint --offline -q --profile production playbooks || exit $?

cleanup() { collector-lab down >/dev/null 2>&1 || true; }
trap cleanup EXIT

collector-lab build || exit $?
# A host that trips while booting gets one more try: `up` is idempotent and keeps what is up.
collector-lab up --fresh || collector-lab up || exit $?

pytest "$@"
rc=$?
if [ "$rc" = 5 ]; then
  echo "error: pytest collected no tests" >&2
  rc=1
fi
exit "$rc"
