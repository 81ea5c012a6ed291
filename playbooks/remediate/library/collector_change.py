#!/usr/bin/python3
"""Ansible module: report one setting's before/after as an honest change with a diff.

Remediations that act through an API (or touch a file holding secrets) read the current value
themselves and hand this module only the one line that changes, so `--check --diff` shows that
line and nothing else. It changes nothing on the host; `changed` is simply before != after.
"""
from __future__ import annotations

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: collector_change
short_description: Report a before/after value as a change with a diff (changes nothing).
options:
  name: {description: What the value is (used as the diff header)., type: str, required: true}
  before: {description: The current value, one line., type: str, required: true}
  after: {description: The wanted value, one line., type: str, required: true}
"""


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "before": {"type": "str", "required": True},
            "after": {"type": "str", "required": True},
        },
        supports_check_mode=True,
    )
    name, before, after = (module.params[k] for k in ("name", "before", "after"))
    changed = before != after
    result = {"changed": changed, "name": name, "before_value": before, "after_value": after}
    if changed:
        result["msg"] = f"{name}: {before} -> {after}"
        if module._diff:
            result["diff"] = {
                "before_header": name,
                "after_header": name,
                "before": before + "\n",
                "after": after + "\n",
            }
    else:
        result["msg"] = f"{name}: already {after}"
    module.exit_json(**result)


if __name__ == "__main__":
    main()
