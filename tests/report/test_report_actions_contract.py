"""The report reads actions.json through remediate's ActionRecord (issue 12, point 1): a record that is not
one (no plan id or hash: not written by `remediate apply`) is left out and said, not half-shown."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

from report_fixtures import ACTIONS

from collector import report
from collector.bundle import Bundle


def test_an_action_record_that_is_not_one_is_left_out_and_said(make_bundle: Callable[..., Path]) -> None:
    actions = copy.deepcopy(ACTIONS)
    stray = copy.deepcopy(actions["actions"][0])
    del stray["plan_id"], stray["plan_hash"]
    stray["action"] = "stray-restart"
    actions["actions"].append(stray)
    path = make_bundle()
    bundle = Bundle.open(path)
    bundle.write_json("actions.json", actions)
    bundle.seal()
    report.render_reports(path)
    md = (path / "report.md").read_text()
    assert "kill-idle-connections" in md  # the record apply wrote is shown
    assert "stray-restart" not in md
    assert "actions.json record is incomplete" in md and "left out of this report" in md
