"""collector.jsonfile.read_json: the one read-JSON-or-default."""

from __future__ import annotations

from pathlib import Path

from collector.jsonfile import read_json


def test_read_json_gives_the_value_or_the_default(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text('{"command": ["ansible-playbook", "-l", "app"]}')
    assert read_json(good) == {"command": ["ansible-playbook", "-l", "app"]}
    assert read_json(good, {}, want=dict)["command"][2] == "app"
    assert read_json(tmp_path / "missing.json", {"none": 1}) == {"none": 1}
    (tmp_path / "half.json").write_text('{"command": [')
    assert read_json(tmp_path / "half.json", "default") == "default"
    (tmp_path / "list.json").write_text("[1, 2]")
    assert read_json(tmp_path / "list.json", {}, want=dict) == {}  # JSON, but not the shape asked for
    assert read_json(tmp_path / "list.json", want=(list, dict)) == [1, 2]
    assert read_json(tmp_path) is None  # a folder is unreadable as a file: the default
    (tmp_path / "bytes.json").write_bytes(b'\xff\xfe{"a": 1}')
    assert read_json(tmp_path / "bytes.json", 0) == 0
