"""The ssh engine reads each known_hosts file once per version and gives each connection only its host's keys
(plain, hashed and [host]:port entries), so trusting 1,000 hosts is not 1,000 parses of a 1,000-line file."""

from __future__ import annotations

import os
from pathlib import Path

import paramiko

from collector.transport import ssh


def _line(name: str, key: paramiko.PKey) -> str:
    return f"{name} {key.get_name()} {key.get_base64()}\n"


def test_each_connection_gets_its_hosts_keys_from_one_parse(tmp_path: Path) -> None:
    a, b, c = (paramiko.RSAKey.generate(1024) for _ in range(3))
    hashed = paramiko.HostKeys.hash_host("10.0.0.3")
    known = tmp_path / "known_hosts"
    known.write_text(_line("10.0.0.1", a) + _line("[10.0.0.2]:2222", b) + _line(hashed, c))
    hv = {"ansible_ssh_common_args": f"-o UserKnownHostsFile={known}"}

    def trusted(host: str, port: int) -> dict[str, str]:
        client = paramiko.SSHClient()
        ssh._trust_known_keys(client, hv, host, port)
        return {n: k.get_base64() for n in client.get_host_keys() for k in client.get_host_keys()[n].values()}

    assert trusted("10.0.0.1", 22) == {"10.0.0.1": a.get_base64()}
    assert trusted("10.0.0.2", 2222) == {"[10.0.0.2]:2222": b.get_base64()}
    assert trusted("10.0.0.2", 22) == {}  # the port is part of the name
    assert trusted("10.0.0.3", 22) == {"10.0.0.3": c.get_base64()}
    parsed = ssh._parsed_known_hosts(known)
    assert ssh._parsed_known_hosts(known) is parsed  # one parse while the file is unchanged
    known.write_text(_line("10.0.0.1", b))
    os.utime(known, ns=(1, 1))
    assert ssh._parsed_known_hosts(known) is not parsed  # a changed file is read again
    assert trusted("10.0.0.1", 22) == {"10.0.0.1": b.get_base64()}
