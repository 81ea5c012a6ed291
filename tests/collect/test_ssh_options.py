"""How the ssh engine reads OpenSSH options from the inventory (pure parsing; the lab tests connect)."""

from __future__ import annotations

import pytest

from collector.transport.ssh import jump_hosts, ssh_options


def test_options_from_common_and_extra_args_with_quotes() -> None:
    hv = {
        "ansible_ssh_common_args": "-o UserKnownHostsFile=/k/h -oStrictHostKeyChecking=no "
        "-o 'ProxyCommand=ssh -i /k/id -W %h:%p root@10.0.0.1'",
        "ansible_ssh_extra_args": "-o 'ConnectTimeout 5'",
    }
    assert ssh_options(hv) == {
        "userknownhostsfile": "/k/h",
        "stricthostkeychecking": "no",
        "proxycommand": "ssh -i /k/id -W %h:%p root@10.0.0.1",
        "connecttimeout": "5",
    }


@pytest.mark.parametrize(
    ("args", "hops"),
    [
        ("-o ProxyJump=bastion", [(None, "bastion", None)]),
        ("-J ops@bastion:2222", [("ops", "bastion", 2222)]),
        ("-Jops@b1,b2:22", [("ops", "b1", None), (None, "b2", 22)]),
        ("-o ProxyJump=ssh://ops@[fd00::1]:2200", [("ops", "fd00::1", 2200)]),
        ("-o ProxyJump=none", []),
        ("-o UserKnownHostsFile=/k/h", []),
        # what an Ansible user writes in ansible_ssh_common_args
        ("-o StrictHostKeyChecking=yes -o ProxyJump=root@10.203.57.11", [("root", "10.203.57.11", None)]),
        ("-o 'ProxyJump ops@bastion:2200' -o UserKnownHostsFile=/k/h", [("ops", "bastion", 2200)]),
        ('-o "ProxyJump=ops@b1:2200,root@b2"', [("ops", "b1", 2200), ("root", "b2", None)]),
    ],
)
def test_proxyjump_hops(args: str, hops: list[tuple[str | None, str, int | None]]) -> None:
    assert jump_hosts({"ansible_ssh_common_args": args}) == hops


def test_proxyjump_in_extra_args_counts_too() -> None:
    hv = {
        "ansible_ssh_common_args": "-o UserKnownHostsFile=/k/h",
        "ansible_ssh_extra_args": "-o ProxyJump=ops@bastion:2222",
    }
    assert jump_hosts(hv) == [("ops", "bastion", 2222)]
