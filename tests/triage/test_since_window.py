"""`--since` as an ISO time bounds every windowed rule as a duration does (collector.times.window_start).

A windowed rule is one whose measure calls window_start: found by reading the measures, so a new
windowed measure is tested here without editing this file.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from triage_synth import ROLES, findings_by_rule, healthy, make_bundle

from collector.triage import triage_bundle
from collector.triage.engine import Rule, load_rules
from collector.triage.measures import MEASURES

# The synthetic run started at 06:00:00Z (triage_synth.STARTED): a kill at 05:57:10 and one at 04:00:00.
KILLS = (
    "[Sat Nov 28 05:57:10 2026] Memory cgroup out of memory: Killed process 4242 (python3) vm:1kB\n"
    "[Sat Nov 28 04:00:00 2026] Memory cgroup out of memory: Killed process 17 (old) total-vm:1kB\n"
)


def windowed_rules() -> list[Rule]:
    """Windowed rules judged on this synthetic fleet's roles (Compose's read docker events, in
    tests/triage/test_compose_triage.py)."""
    known = {r for roles in ROLES.values() for r in roles} | {"all"}
    rules = [
        r
        for r in load_rules()
        if "window_start(" in inspect.getsource(MEASURES[r.measure]) and set(r.roles) & known
    ]
    assert rules, "no rule reads the --since window any more: this test has nothing to check"
    return rules


def _host_for(rule: Rule) -> str:
    return next(h for h, roles in ROLES.items() if set(roles) & set(rule.roles) or "all" in rule.roles)


@pytest.mark.parametrize("rule", windowed_rules(), ids=lambda r: r.id)
@pytest.mark.parametrize(
    "since, kills",
    [
        ("10m", 1),  # a duration: 05:50 onwards
        ("2026-11-28T05:50:00Z", 1),  # the same window as an ISO time
        ("2026-11-28T06:50:00+01:00", 1),  # ... with an offset
        ("2026-11-28T05:50", 1),  # ... naive (UTC)
        ("3h", 2),  # both kills
        ("2026-11-28T03:00:00Z", 2),
    ],
)
@pytest.mark.parametrize("in_argv", [True, False], ids=["argv", "manifest"])
def test_an_iso_since_bounds_the_window_like_a_duration(
    rule: Rule, since: str, kills: int, in_argv: bool, tmp_path: Path
) -> None:
    host = _host_for(rule)
    probes = healthy()
    probes[host][str(rule.args.get("probe") or rule.probes[0])] = KILLS
    found = findings_by_rule(triage_bundle(make_bundle(tmp_path, probes, since=since, since_in_argv=in_argv)))
    assert [f["hosts"] for f in found[rule.id]] == [[host]]
    assert f"{kills} OOM kill" in found[rule.id][0]["message"]


@pytest.mark.parametrize("rule", windowed_rules(), ids=lambda r: r.id)
@pytest.mark.parametrize("since", ["1m", "2026-11-28T05:59:00Z"])
def test_a_kill_before_an_iso_window_is_left_out(rule: Rule, since: str, tmp_path: Path) -> None:
    host = _host_for(rule)
    probes = healthy()
    probes[host][str(rule.args.get("probe") or rule.probes[0])] = KILLS
    found = findings_by_rule(triage_bundle(make_bundle(tmp_path, probes, since=since)))
    assert rule.id not in found
