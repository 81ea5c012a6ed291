#!/usr/bin/python3
"""Ansible module: run the probe runner on this host, the host's secret vars kept out of Ansible's records.

The command module would echo its `stdin` (the runner's request, passwords included) back as
`invocation.module_args.stdin` into every job event, AWX's job history and ansible-runner's artifacts.
Here the secret vars are an argument declared `no_log`: Ansible masks it in the invocation and masks
its values anywhere in the result. They reach the runner on its stdin, merged into the request's vars.

Sealed output: with `recipient` (a PEM certificate whose private key only the controller holds), the
runner's answer and its error lines are encrypted on the host (`openssl cms -encrypt`, AES-256) and
returned only as `sealed` (base64 DER CMS), so job events, AWX's job history and ansible-runner's artifacts
hold ciphertext, never the raw, unredacted output; `collector ingest --unseal-key` opens it. When sealing
fails (no openssl on the host) the host fails and nothing of the output is returned.
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile

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
  recipient:
    description: A PEM certificate; when given, the output is returned only sealed to it (CMS, AES-256).
    type: str
    default: ""
"""


def seal(data: bytes, certificate: str) -> bytes:
    """`data` encrypted to `certificate` with openssl's CMS (DER); raises OSError or CalledProcessError."""
    with tempfile.TemporaryDirectory(prefix="collector-seal-") as folder:
        cert = os.path.join(folder, "recipient.pem")
        with open(cert, "w", encoding="ascii") as handle:
            handle.write(certificate)
        proc = subprocess.run(
            ["openssl", "cms", "-encrypt", "-binary", "-aes256", "-outform", "DER", cert],
            input=data,
            capture_output=True,
            check=True,
        )
    return proc.stdout


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "source": {"type": "str", "required": True},
            "request": {"type": "raw", "required": True},
            "secrets": {"type": "dict", "default": {}, "no_log": True},
            "recipient": {"type": "str", "default": ""},
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
    if module.params["recipient"]:
        answer = json.dumps({"rc": proc.returncode, "stdout": stdout, "stderr": stderr[-4000:]}).encode()
        try:
            sealed = base64.b64encode(seal(answer, module.params["recipient"])).decode("ascii")
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            module.fail_json(
                msg=f"could not seal the output to the recipient certificate (openssl cms): {exc}; "
                + detail.decode("utf-8", "replace")[-500:],
                changed=False,
                invocation=invocation,
            )
        module.exit_json(changed=False, rc=proc.returncode, sealed=sealed, invocation=invocation)
    if proc.returncode != 0:
        module.fail_json(msg=f"probe runner exited {proc.returncode}", rc=proc.returncode, stdout=stdout,
                         stderr=stderr[-4000:], changed=False, invocation=invocation)
    module.exit_json(changed=False, rc=0, stdout=stdout, stderr=stderr[-4000:], invocation=invocation)


if __name__ == "__main__":
    main()
