"""Extra vars reach Ansible marked !unsafe: a template in a value is never rendered (real ansible-runner,
local)."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from collector.transport.ansible import run_playbook, unsafe_yaml

PLAYBOOK = """\
- name: Echo a variable.
  hosts: all
  gather_facts: false
  tasks:
    - name: Show the value.
      ansible.builtin.debug:
        msg: "got {{ value }} and {{ nested.inner[0] }}"
"""


def test_unsafe_yaml_tags_the_whole_value_and_keeps_every_type() -> None:
    from ansible.parsing.yaml.loader import AnsibleLoader

    value = {"a": "x", "b": [1, "y"], "c": {"d": None}, "glob": "*", "eq": "=", "size": "30", "flag": "true"}
    text = unsafe_yaml(value)
    assert text.startswith("!unsafe {")
    # Tagged string by string, "*" and "=" did not load and "30" came back an int (clean-disk's pattern=*).
    assert yaml.load(text, Loader=AnsibleLoader) == value


def test_a_template_in_an_extra_var_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    book = tmp_path / "echo.yml"
    book.write_text(PLAYBOOK)
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        f"all:\n  hosts:\n    localhost: {{ansible_connection: local, "
        f"ansible_python_interpreter: {sys.executable}}}\n"
    )
    evil = f"{{{{ lookup('pipe', 'touch {marker}') }}}}"
    run = run_playbook(
        book, str(inventory), "localhost", {"value": evil, "nested": {"inner": [evil]}}, unsafe_vars=True
    )
    assert run.status == "successful", run
    assert not marker.exists()
    said = [r["msg"] for r in run.hosts["localhost"].results if r["task"] == "Show the value."]
    assert said == [f"got {evil} and {evil}"]
    # The same run without the marking renders the template: the test can fail.
    run_playbook(book, str(inventory), "localhost", {"value": evil, "nested": {"inner": ["x"]}})
    assert marker.exists()
