"""Secret scrubbing: patterns as data, consistent placeholders, counts per rule and file.

Works on bytes so non-UTF-8 output survives untouched outside the replaced spans. Every rule
names the secret part of its match (group `secret`, `secret2`, ...; the whole match when it has
none); all rules are matched against the original data first and the chosen spans replaced in one
pass, so a placeholder is never itself re-matched and text that is already redacted stays as is.
"""
from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from collector.core import UsageError

PLACEHOLDER_OPEN = "«REDACTED:"
PLACEHOLDER_CLOSE = "»"
_PLACEHOLDER_RE = re.compile(re.escape(PLACEHOLDER_OPEN).encode() + rb"[^\s\xbb]*" + re.escape(PLACEHOLDER_CLOSE).encode())
_MIN_KNOWN_SECRET = 4  # shorter literals would scrub ordinary words and numbers


@dataclass(frozen=True)
class Rule:
    """One secret pattern: a name (used in placeholders and counts) and a bytes regex."""

    name: str
    pattern: re.Pattern[bytes]
    description: str = ""
    needles: tuple[bytes, ...] = ()  # lower-case literals; none present → the rule cannot match


# A value: quoted (secret is inside the quotes) or bare up to whitespace or a separator.
_VALUE = rb"""(?:"(?P<secret>[^"\r\n]*)"|'(?P<secret2>[^'\r\n]*)'|(?P<secret3>[^\s"',;&]+))"""
_SECRET_KEY = rb"[A-Za-z0-9_.-]*(?:PASSWORD|PASSWD|PASSPHRASE|SECRET|TOKEN|KEY)[A-Za-z0-9_.-]*"

# (name, needles, regex, flags, description) — the catalogue. A rule runs only when one of its
# needles (lower case) occurs in the data, which keeps a 25 MiB journal fast. Specific rules come
# first: at equal spans the rule listed first names the placeholder.
RULE_TABLE: tuple[tuple[str, tuple[bytes, ...], bytes, int, str], ...] = (
    ("private_key", (b"private key",),
     rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----\r?\n?(?P<secret>(?:(?!-----END)[\s\S])*?)"
     rb"(?=\r?\n?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|\Z)",
     0, "PEM private key blocks (the body; a block cut by the output cap is scrubbed to the end)"),
    ("jwt", (b"eyj",),
     rb"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",
     0, "JSON Web Tokens"),
    ("aws_access_key", (b"akia", b"asia", b"agpa", b"aida", b"aroa", b"anpa", b"anva", b"aipa"),
     rb"\b(?P<secret>(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16})\b",
     0, "AWS access key ids"),
    ("aws_secret_key", (b"secret",),
     rb"aws_?secret_?(?:access_?)?key[\"']?[ \t]*[=:][ \t]*[\"']?(?P<secret>[A-Za-z0-9/+=]{40})",
     re.IGNORECASE, "AWS secret access keys"),
    ("url_password", (b"://",),
     rb"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@\"'<>]*:(?P<secret>[^\s@/\"'<>]+)@",
     0, "passwords in DSNs and URLs: scheme://user:PASS@host"),
    ("redis_auth", (b"requirepass", b"masterauth"),
     rb"\b(?:requirepass|masterauth)[\"']?[ \t:=]+" + _VALUE,
     re.IGNORECASE, "Redis requirepass / masterauth in config or CONFIG SET"),
    ("redis_auth", (b"requirepass", b"masterauth"),
     rb"\b(?:requirepass|masterauth)\"?\r?\n[ \t]*(?:\d+\)[ \t]*)?\"(?P<secret>[^\"\r\n]*)\"",
     re.IGNORECASE, "Redis CONFIG GET requirepass answers (value on the next line)"),
    ("redis_auth", (b"auth",),
     rb"\bAUTH[ \t]+(?:[^\s]+[ \t]+)?(?P<secret>[^\s]+)",
     0, "Redis AUTH [user] <password>"),
    ("redis_auth", (b"rediscli_auth",),
     rb"\bREDISCLI_AUTH[ \t]*[=:][ \t]*" + _VALUE,
     0, "the REDISCLI_AUTH environment variable"),
    ("redis_auth", (b"redis-cli",),
     rb"\bredis-cli\b[^\n]*?[ \t](?:-a|--pass)[ \t]+(?P<secret>[^\s]+)",
     0, "redis-cli -a <password> on a command line"),
    ("redis_auth", (b"setuser",),
     rb"\bACL[ \t]+SETUSER\b[^\n]*?[ \t]>(?P<secret>[^\s]+)",
     re.IGNORECASE, "Redis ACL SETUSER ... >password"),
    ("sql_password", (b"password", b"identified"),
     rb"\b(?:password|identified[ \t]+by)[ \t]+(?:'(?P<secret>[^'\r\n]*)'|\"(?P<secret2>[^\"\r\n]*)\")",
     re.IGNORECASE, "SQL: ALTER ROLE ... PASSWORD 'x', IDENTIFIED BY 'x'"),
    ("basic_auth", (b"curl", b"wget"),
     rb"\b(?:curl|wget)\b[^\n]*?[ \t](?:-u|--user|--password|--http-password)[ \t=]+(?:[^\s:'\"]+:)?"
     rb"['\"]?(?P<secret>[^\s'\"]+)",
     0, "curl -u user:password, wget --password"),
    ("cookie", (b"cookie",),
     rb"\b(?:Set-)?Cookie[ \t]*:[ \t]*(?P<secret>[^\r\n]+)",
     re.IGNORECASE, "Cookie / Set-Cookie header values (sessions)"),
    ("vendor_token", (b"ghp_", b"gho_", b"ghu_", b"ghs_", b"ghr_", b"xox", b"sk_live_", b"glpat-"),
     rb"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|xox[abprs]-[A-Za-z0-9-]{10,}|sk_live_[A-Za-z0-9]{16,}|glpat-[A-Za-z0-9_-]{20,})",
     0, "well-known token formats (GitHub, Slack, Stripe, GitLab)"),
    ("authorization", (b"authorization",),
     rb"\bAuthorization[\"']?[ \t]*[:=][ \t]*[\"']?(?:(?:Bearer|Basic|Token|Digest|ApiKey)[ \t]+)?"
     rb"(?P<secret>[^\s\"',;]+)",
     re.IGNORECASE, "Authorization: Bearer/Basic/Token <credential>"),
    ("authorization", (b"bearer",),
     rb"\bBearer[ \t]+(?P<secret>[A-Za-z0-9._~+/=-]{8,})",
     re.IGNORECASE, "bearer tokens anywhere"),
    ("env_secret", (b"pass", b"secret", b"token", b"key"),
     rb"(?m)^(?:[+<>-](?![+<>-]))?[ \t]*(?:export[ \t]+)?" + _SECRET_KEY + rb"[ \t]*=[ \t]*" + _VALUE,
     re.IGNORECASE, ".env lines (also in diffs) whose key names a secret (*PASSWORD*, *SECRET*, *TOKEN*, *KEY*)"),
    ("password", (b"pass", b"pwd"),
     rb"(?:password|passwd|passphrase|(?<![a-z])pass|(?<![a-z])pwd)(?:[_.-][A-Za-z0-9_.-]*)?"
     rb"[\"']?[ \t]*[=:][ \t]*" + _VALUE,
     re.IGNORECASE, "password=, PGPASSWORD=, \"password\": \"...\" anywhere"),
    ("api_token", (b"token", b"key", b"secret"),
     rb"(?:token|api[_-]?key|apikey|access[_-]?key|secret|auth[_-]?key)(?:[_.-][A-Za-z0-9_.-]*)?"
     rb"[\"']?[ \t]*[=:][ \t]*" + _VALUE,
     re.IGNORECASE, "token=, api_key=, X-Api-Key:, \"secret\": \"...\" anywhere"),
)

RULES: tuple[Rule, ...] = tuple(Rule(n, re.compile(p, f), d, k) for n, k, p, f, d in RULE_TABLE)
_SECRET_GROUPS = ("secret", "secret2", "secret3")


def user_rules(patterns: Iterable[str]) -> list[Rule]:
    """Compile the user's extra regexes (Settings.redact_patterns); group 1 or the whole match is secret."""
    rules = []
    for i, text in enumerate(patterns, 1):
        try:
            rules.append(Rule(f"user{i}", re.compile(text.encode()), f"user pattern {text!r}"))
        except re.error as exc:
            raise UsageError(f"redact pattern {text!r} is not a valid regex: {exc}") from None
    return rules


_SECRET_VAR = re.compile(r"(?:password|passwd|passphrase|secret|token|api_?key|_pass$|_auth$)", re.IGNORECASE)
_NOT_SECRET_VAR = re.compile(r"(?:_file|_path|_dir|_url)$", re.IGNORECASE)  # where a secret lives, not the secret


def secrets_from_vars(vars_by_host: Mapping[str, Mapping[str, Any]] | Mapping[str, Any]) -> list[str]:
    """The values of inventory variables whose names say they are secrets (e.g. collector_redis_password)."""
    found: set[str] = set()

    def visit(name: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                visit(str(key), inner)
        elif isinstance(value, (str, int)) and not isinstance(value, bool) and _SECRET_VAR.search(name) \
                and not _NOT_SECRET_VAR.search(name) and len(str(value)) >= _MIN_KNOWN_SECRET:
            found.add(str(value))

    for key, value in vars_by_host.items():
        visit(str(key), value)
    return sorted(found)


# Values that only name or mask a secret: shell/Jinja/probe variables, printf slots, "***". Literal
# known secrets are exempt; a real password of punctuation only is what known_secrets is for.
_NOT_A_VALUE = re.compile(rb"(?:\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-[^}]*)?\}?|\$[A-Z_][A-Z0-9_]*|\{\{.*"
                          rb"|\{[A-Za-z_][A-Za-z0-9_]*\}|%[a-z]|<[^<>]*>|[^A-Za-z0-9\x80-\xff]*)\\*", re.DOTALL)


def _literal_forms(secret: str | bytes) -> set[bytes]:
    """A known secret as it may appear: verbatim and percent-encoded (in a URL or DSN)."""
    raw = secret.encode() if isinstance(secret, str) else bytes(secret)
    return {raw, urllib.parse.quote(raw, safe="").encode(), urllib.parse.quote_plus(raw).encode()}


def _secret_span(rule: Rule, match: re.Match[bytes]) -> tuple[int, int] | None:
    named = match.re.groupindex
    for group in _SECRET_GROUPS:
        if group in named and match.group(group) is not None:
            return match.span(group)
    if not named and match.re.groups >= 1 and match.group(1) is not None:
        return match.span(1)  # user patterns: group 1 is the secret
    return match.span()


class Redactor:
    """Replaces secrets with «REDACTED:<rule>:<n>»; the same value always gets the same placeholder."""

    def __init__(self, extra_patterns: Iterable[str] = (), known_secrets: Iterable[str] = (),
                 *, enabled: bool = True, start_numbers: dict[str, int] | None = None) -> None:
        self.enabled = enabled
        self.rules: list[Rule] = list(RULES) + user_rules(extra_patterns)
        # Every encoded form maps back to its secret, so all forms share one placeholder.
        self._canonical: dict[bytes, bytes] = {
            form: (s.encode() if isinstance(s, str) else bytes(s))
            for s in known_secrets if s is not None and len(s) >= _MIN_KNOWN_SECRET for form in _literal_forms(s)}
        literals = sorted(self._canonical, key=lambda b: (-len(b), b))
        if literals:
            self.rules.insert(0, Rule("known_secret", re.compile(b"|".join(re.escape(x) for x in literals)),
                                      "literal secret values passed in (e.g. inventory passwords)"))
        self._placeholders: dict[bytes, bytes] = {}
        self._numbers: dict[str, int] = dict(start_numbers or {})
        self.counts: dict[str, dict[str, int]] = {}

    @property
    def issued(self) -> dict[str, int]:
        """How many distinct placeholders each rule has issued (to continue numbering later)."""
        return dict(self._numbers)

    def _placeholder(self, rule: str, value: bytes) -> bytes:
        known = self._placeholders.get(value)
        if known is None:
            self._numbers[rule] = self._numbers.get(rule, 0) + 1
            known = f"{PLACEHOLDER_OPEN}{rule}:{self._numbers[rule]}{PLACEHOLDER_CLOSE}".encode()
            self._placeholders[value] = known
        return known

    def _spans(self, data: bytes) -> list[tuple[int, int, int, str]]:
        taken = [m.span() for m in _PLACEHOLDER_RE.finditer(data)]
        spans: list[tuple[int, int, int, str]] = []
        lowered = data.lower()
        for order, rule in enumerate(self.rules):
            if rule.needles and not any(n in lowered for n in rule.needles):
                continue
            for match in rule.pattern.finditer(data):
                span = _secret_span(rule, match)
                if span is None or span[0] == span[1]:
                    continue
                start, end = span
                if rule.name != "known_secret" and _NOT_A_VALUE.fullmatch(data, start, end):
                    continue
                if taken and any(s < end and start < e for s, e in taken):
                    continue  # already a placeholder
                spans.append((start, end, order, rule.name))
        # Earliest first; at one start the longest wins, then the rule listed first. Overlapping spans
        # merge into one, so no part of a secret any rule saw is left visible.
        spans.sort(key=lambda s: (s[0], -(s[1] - s[0]), s[2]))
        chosen: list[tuple[int, int, int, str]] = []
        for candidate in spans:
            if chosen and candidate[0] < chosen[-1][1]:
                last = chosen[-1]
                chosen[-1] = (last[0], max(last[1], candidate[1]), last[2], last[3])
                continue
            chosen.append(candidate)
        return chosen

    def redact_bytes(self, data: bytes, where: str = "") -> bytes:
        """`data` with every secret replaced; `where` (a bundle-relative path) keys the counts."""
        if not self.enabled or not data:
            return data
        out: list[bytes] = []
        pos = 0
        for start, end, _, rule in self._spans(data):
            value = data[start:end]
            value = self._canonical.get(value, value)
            if value.strip(b" \t\"'") == b"":
                continue
            out.append(data[pos:start])
            out.append(self._placeholder(rule, value))
            pos = end
            per_file = self.counts.setdefault(rule, {})
            per_file[where] = per_file.get(where, 0) + 1
        if pos == 0:
            return data
        out.append(data[pos:])
        return b"".join(out)

    def redact_text(self, text: str, where: str = "") -> str:
        """`text` with every secret replaced (surrogate escapes keep undecodable bytes intact)."""
        if not self.enabled or not text:
            return text
        return self.redact_bytes(text.encode("utf-8", "surrogateescape"), where).decode("utf-8", "surrogateescape")

    def total(self) -> int:
        """Substitutions made so far, all rules and files."""
        return sum(n for per_file in self.counts.values() for n in per_file.values())

    def describe(self) -> list[dict[str, str]]:
        """The rule catalogue as data (for redaction.json), without the user patterns' text."""
        seen: dict[str, str] = {}
        for rule in self.rules:
            seen.setdefault(rule.name, rule.description if not rule.name.startswith("user") else "user pattern")
        return [{"rule": n, "description": d} for n, d in seen.items()]
