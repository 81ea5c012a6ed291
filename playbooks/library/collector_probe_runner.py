#!/usr/bin/python3
"""Ansible module: run the probe runner on this host, the host's secret vars kept out of Ansible's records.

The command module would echo its `stdin` (the runner's request, passwords included) back as
`invocation.module_args.stdin` into every job event, AWX's job history and ansible-runner's artifacts.
Here the secret vars are an argument declared `no_log`: Ansible masks it in the invocation and masks
its values anywhere in the result. They reach the runner on its stdin, merged into the request's vars.
"""
from __future__ import annotations

import json
import subprocess
import sys

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: collector_probe_runner
short_description: Run the incident collector's probe runner with a request (read-only).
options:
  source:
    description: The runner's Python source (playbooks/files/probe_runner.py).
    type: str
    required: true
  request:
    description: The runner's request (JSON text or a mapping) without the secret vars.
    type: raw
    required: true
  secrets:
    description: Secret host vars (merged into the request's vars; never logged).
    type: dict
    default: {}
"""


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "source": {"type": "str", "required": True},
            "request": {"type": "raw", "required": True},
            "secrets": {"type": "dict", "default": {}, "no_log": True},
        },
        supports_check_mode=True,  # the runner only reads: it runs in --check too
    )
    raw = module.params["request"]
    try:
        request = dict(raw) if isinstance(raw, dict) else json.loads(raw)
    except (TypeError, ValueError) as exc:
        module.fail_json(msg=f"request is not JSON: {exc}")
    request["vars"] = {**(request.get("vars") or {}), **(module.params["secrets"] or {})}
    proc = subprocess.run(
        [sys.executable, "-c", module.params["source"]],
        input=json.dumps(request).encode(),
        capture_output=True,
        check=False,
    )
    stdout = proc.stdout.decode("utf-8", "replace")
    # The runner's progress lines (@@probe ...) are for streaming transports:
    # keep only what explains a failure.
    stderr = "\n".join(
        line
        for line in proc.stderr.decode("utf-8", "replace").splitlines()
        if not line.startswith("@@probe ")
    )
    # The answer never holds a secret's raw value (the runner puts secrets only in its probes' environments;
    # outputs are base64), so Ansible's blanket masking of no_log values all through the result could only
    # corrupt it: a short password that also occurs in a probe's name or in base64 text. The argument itself
    # is masked here, and nothing else is touched.
    hidden = {name: "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" for name in module.params["secrets"] or {}}
    invocation = {"module_args": {**module.params, "secrets": hidden}}
    module.no_log_values.clear()
    if proc.returncode != 0:
        module.fail_json(msg=f"probe runner exited {proc.returncode}", rc=proc.returncode, stdout=stdout,
                         stderr=stderr[-4000:], changed=False, invocation=invocation)
    module.exit_json(changed=False, rc=0, stdout=stdout, stderr=stderr[-4000:], invocation=invocation)


if __name__ == "__main__":
    main()
