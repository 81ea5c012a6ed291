"""One definition of each evidence pattern (issue 12, point 2): a rule names triage.patterns' line by
`@name`, so the error-storm rule counts the same error lines the report's timeline takes its first from."""

from __future__ import annotations

import pytest

from collector.core import UsageError
from collector.triage import patterns
from collector.triage.engine import load_rules
from collector.triage.measures import rule_regex


def test_a_named_pattern_is_the_one_definition_and_a_regex_stays_itself() -> None:
    assert rule_regex("@error") == patterns.ERROR.regex.pattern
    assert rule_regex("@oom") == patterns.OOM.regex.pattern
    assert rule_regex(r"status=5\d\d") == r"status=5\d\d"
    with pytest.raises(UsageError, match="no such evidence pattern"):
        rule_regex("@errors")


def test_the_error_storm_rule_counts_the_evidence_patterns_error_lines() -> None:
    rules = {r.id: r for r in load_rules()}
    assert rules["error-storm"].args["pattern"] == "@error"
    for rule in rules.values():  # every named pattern a rule uses exists
        for value in rule.args.values():
            if isinstance(value, str) and value.startswith("@"):
                rule_regex(value)
