"""Evidence patterns: the one definition of each kind of log line triage and the report look for.

Triage's measures grep with them; the report's timeline takes its first OOM and first error line
from the same patterns, so the two never disagree about what a line means.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class LinePattern:
    """A log-line pattern, and lower-case literals one of which every match contains.

    The needles let a 25 MiB journal be scanned with str.find; the regex only confirms the candidate.
    """

    name: str
    regex: re.Pattern[str]
    needles: tuple[str, ...]

    def search(self, text: str) -> bool:
        return self.regex.search(text) is not None


# A kernel OOM kill ("Out of memory: Killed process", "invoked oom-killer", cgroup "oom_kill").
OOM = LinePattern(
    "oom",
    re.compile(r"out of memory|oom[-_]kill|killed process", re.IGNORECASE),
    ("out of memory", "oom-kill", "oom_kill", "killed process"),
)
# An error line of any service or unit.
ERROR = LinePattern(
    "error",
    re.compile(r"\b(ERROR|CRITICAL|FATAL|PANIC)\b|Traceback|\berror:", re.IGNORECASE),
    ("error", "critical", "fatal", "panic", "traceback"),
)
# nginx failing to get an answer from its upstream (the app), by kind, as its error log words them:
# refused or unreachable, every server marked failed, no answer within proxy_read_timeout, cut off mid-answer.
NGINX_UPSTREAM_KINDS: tuple[tuple[str, str], ...] = (
    ("connect() failed", r"connect\(\) failed .*while connecting to upstream"),
    ("no live upstreams", r"no live upstreams"),
    ("upstream timed out", r"upstream timed out"),
    ("upstream closed early", r"upstream prematurely closed connection"),
    ("recv() failed", r"recv\(\) failed .*upstream"),
)
NGINX_UPSTREAM = LinePattern(
    "nginx-upstream",
    re.compile("|".join(f"(?:{regex})" for _, regex in NGINX_UPSTREAM_KINDS), re.IGNORECASE),
    ("upstream",),
)

# A rule names one of these in its args as `pattern: "@error"` (collector.triage.measures.rule_regex).
BY_NAME: dict[str, LinePattern] = {pat.name: pat for pat in (OOM, ERROR, NGINX_UPSTREAM)}
