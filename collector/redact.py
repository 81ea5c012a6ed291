"""Secret scrubbing: patterns as data, consistent placeholders, counts per rule and file.

Works on bytes so non-UTF-8 output survives untouched outside the replaced spans. Every rule
names the secret part of its match (group `secret`, `secret2`, ...; the whole match when it has
none); all rules are matched against the original data first and the chosen spans replaced in one
pass, so a placeholder is never itself re-matched and text that is already redacted stays as is.

Rules that find `NAME = value` pairs (.env, YAML, JSON, INI, command-line flags, URL queries) decide
on the name with `secret_name`: a name is secret when one of its words is (password, secret, token,
key, credentials...), unless its last word says it is a knob about the secret (`TOKEN_TTL`,
`PASSWORD_MIN_LENGTH`, `SECRET_KEY_FILE`) or it names a data key (`CACHE_KEY`, `SORT_KEY`). An
unquoted value runs to the end of the word (whitespace), not to the first `;`, `&` or `,`; inside a
URL query it ends at the next `&name=`, in a `Key=Value;` connection string at the next `;Name=`.

The tests/bundle/redaction_corpus corpus measures it: bench/bench_redact.py prints recall and
over-redaction, tests/bundle/test_redact.py holds recall 100 % and over-redaction <= 2 %.

Redaction fails closed: any internal error surfaces as `RedactionError` (never the clear text);
`Redactor.redact_or_withhold` turns it into a placeholder plus the error for a bundle's manifest.
"""

from __future__ import annotations

import base64
import bisect
import json
import re
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from collector.core import UsageError

PLACEHOLDER_OPEN = "«REDACTED:"
PLACEHOLDER_CLOSE = "»"
_PLACEHOLDER_RE = re.compile(
    re.escape(PLACEHOLDER_OPEN).encode() + rb"[^\s\xbb]*" + re.escape(PLACEHOLDER_CLOSE).encode()
)
_MIN_KNOWN_SECRET = 4  # shorter literals would scrub ordinary words and numbers
WITHHELD = "«WITHHELD: redaction failed, the content is not kept»\n"
WITHHELD_TEXT = "«WITHHELD: redaction failed»"  # the same, for one field of a document (an error, a command)


class RedactionError(Exception):
    """Redaction could not finish: the caller must not write or print the data it was given."""


Span = tuple[int, int]
# A rule's judge: given the match and the whole data, the secret span to replace (optionally with the
# rule name its placeholder carries), or None (not a secret).
Judge = Callable[[re.Match[bytes], bytes], "Span | tuple[int, int, str] | None"]


@dataclass(frozen=True)
class Rule:
    """One secret pattern: a name (used in placeholders and counts), a bytes regex and an optional judge."""

    name: str
    pattern: re.Pattern[bytes]
    description: str = ""
    needles: tuple[bytes, ...] = ()  # lower-case literals; none present → the rule cannot match
    judge: Judge | None = None
    # A line-local rule's match never crosses a line end: it runs only on the lines holding a needle
    # (and `lines_after` more: a two-line answer such as CONFIG GET's).
    line_local: bool = False
    lines_after: int = 0


# ---- names: which NAME in `NAME = value` holds a secret -------------------------------------------

_SECRET_WORDS = frozenset(
    {
        "PASSWORD",
        "PASSWD",
        "PASS",
        "PWD",
        "PW",
        "PASSPHRASE",
        "PASSCODE",
        "SECRET",
        "TOKEN",
        "KEY",
        "APIKEY",
        "CREDENTIALS",
        "CREDENTIAL",
        "CREDS",
        "AUTH",
        "SIG",
        "SIGNATURE",
        "BINDPW",
        "ROOTPW",
        "PSK",
        "SID",
        "SESSID",
        "SESSIONID",
        "JSESSIONID",
        "PHPSESSID",
        "DOCKERCONFIGJSON",
        "DOCKERCFG",
        "DSN",
        "AUTHTOKEN",
        "ACCESSTOKEN",
        "REFRESHTOKEN",
        "IDTOKEN",
        "IDENTITYTOKEN",
        "CSRFTOKEN",
        "CLIENTSECRET",
        "SECRETKEY",
        "ACCESSKEY",
        "PRIVATEKEY",
        "AUTHKEY",
        "MASTERKEY",
        "REQUIREPASS",
        "MASTERAUTH",
        "SASLPASSWD",
        "BEARER",
    }
)
# Names that contain a secret word and are still not secrets: the shell's working directories (as the
# environment spells them; a lower-case `pwd:` in a config is a password).
_NOT_SECRET_NAMES = frozenset({b"PWD", b"OLDPWD"})
# Compound words written as one (`dbpassword`, `adminToken` is split by case already).
_SECRET_ENDINGS = (b"PASSWORD", b"PASSWD", b"SECRET", b"TOKEN", b"APIKEY", b"PASSPHRASE")
# A last word that makes the name a setting about the secret, not the secret.
_KNOB_WORDS = frozenset(
    {
        "TTL",
        "LENGTH",
        "LEN",
        "MIN",
        "MAX",
        "SIZE",
        "PREFIX",
        "SUFFIX",
        "HEADER",
        "HEADERS",
        "NAME",
        "NAMES",
        "FILE",
        "FILES",
        "PATH",
        "DIR",
        "DIRS",
        "URL",
        "URI",
        "ENDPOINT",
        "EXPIRY",
        "EXPIRES",
        "EXPIRATION",
        "EXPIRE",
        "AGE",
        "TIMEOUT",
        "INTERVAL",
        "COUNT",
        "LIMIT",
        "ID",
        "IDS",
        "TYPE",
        "METHOD",
        "METHODS",
        "MODE",
        "ENABLED",
        "DISABLED",
        "ENABLE",
        "DISABLE",
        "REQUIRED",
        "REQUIRE",
        "POLICY",
        "HASHER",
        "ALGORITHM",
        "ALGO",
        "ALG",
        "ROTATION",
        "DAYS",
        "HOURS",
        "SECONDS",
        "MINUTES",
        "FORMAT",
        "VERSION",
        "FIELD",
        "PARAM",
        "SOURCE",
        "BITS",
        "ISSUER",
        "AUDIENCE",
        "CAPACITY",
        "ENCRYPTION",
        "CHANGE",
        "HISTORY",
        "LOCATION",
        "STDIN",
        "PROMPT",
        "COMMAND",
        "CMD",
        "SCRIPT",
        "HELPER",
        "PROVIDER",
        "BACKEND",
        "STORE",
        "STRENGTH",
        "COMPLEXITY",
        "ATTEMPTS",
        "RETRIES",
        "RATE",
        "WINDOW",
        "LIFETIME",
        "DURATION",
        "VALIDITY",
        "REF",
        "REFS",
        "ENV",
        "VAR",
        "VARS",
        "KIND",
        "LABEL",
        "USAGE",
        "STATUS",
        "SCOPE",
        "SCOPES",
        "FINGERPRINT",
        "CHECK",
        "VERIFY",
        "RESET",
        "SET",
        "STATE",
        "HASH",
        "USER",
        "USERNAME",
        # measures and rule states about a secret's subject (auth-failures: passed, token_refresh_errors=3)
        "FAILURES",
        "FAILURE",
        "FAILED",
        "FAILS",
        "ERRORS",
        "ERROR",
        "SUCCESS",
        "SUCCESSES",
        "TOTAL",
        "RATIO",
        "RESULT",
        "RESULTS",
        "LATENCY",
        "WARNINGS",
        "EVENTS",
        "REQUESTS",
        "HITS",
        "MISSES",
        "SOCK",
        "SOCKET",  # SSH_AUTH_SOCK names the agent's socket
    }
)
# `<word>_KEY` that names a data key or index, not a key that opens something.
_DATA_KEY_WORDS = frozenset(
    {
        "CACHE",
        "PRIMARY",
        "SORT",
        "PARTITION",
        "ROUTING",
        "FOREIGN",
        "HASH",
        "RANGE",
        "LOOKUP",
        "GROUP",
        "SHARD",
        "IDEMPOTENCY",
        "PUBLIC",
        "PUB",
        "PUBLISHABLE",
        "DEDUP",
        "DEDUPLICATION",
        "LOCK",
        "QUEUE",
        "INDEX",
        "CURSOR",
        "MAP",
        "METRIC",
        "LABEL",
        "UNIQUE",
        "COMPOSITE",
        "SEARCH",
        "CLUSTER",
        "DISTRIBUTION",
        "JOIN",
        "TENANT",
        "REDIS",
        "REGISTRY",
        "CONFIG",
        "SETTING",
        "SETTINGS",
        "FEATURE",
        "FLAG",
        "ORDER",
        "MESSAGE",
        "EVENT",
        "STREAM",
        "TOPIC",
    }
)
_WORDS_RE = re.compile(rb"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def _words(name: bytes) -> list[bytes]:
    return [w.upper() for w in _WORDS_RE.findall(name)]


def secret_name(name: str | bytes) -> bool:
    """True when a variable, flag, header or field of this name holds a secret (`DB_PASSWORD`, `apiKey`)."""
    raw = name.encode() if isinstance(name, str) else name
    words = _words(raw)
    if not words:
        return False
    if raw in _NOT_SECRET_NAMES or words[0] == b"XDG":  # XDG_SESSION_ID is a login session's number
        return False
    if words[-2:] in (
        [b"SESSION", b"ID"],
        [b"SESS", b"ID"],
        [b"SECRET", b"ID"],
    ):  # cookies; Vault/Consul SecretID
        return True
    last = len(words) - 1
    while last > 0 and (words[last].isdigit() or len(words[last]) == 1):
        last -= 1  # auth_latency_p95 is about latency; DB_PASSWORD_2 is a password
    if words[last].decode() in _KNOB_WORDS:
        return False
    hits = [i for i, w in enumerate(words) if w.decode() in _SECRET_WORDS or w.endswith(_SECRET_ENDINGS)]
    if not hits:
        return False
    if [words[i] for i in hits] == [b"KEY"]:
        i = hits[0]
        if len(words) == 1 or (i > 0 and words[i - 1].decode() in _DATA_KEY_WORDS):
            return False  # `key: password` (a k8s secretKeyRef), CACHE_KEY, SORT_KEY
    return True


# Values that only name or mask a secret: shell/Jinja/probe variables, printf slots, masks, booleans,
# code that reads the secret from elsewhere. Literal known secrets are exempt from this test.
_NOT_A_VALUE = re.compile(
    rb"(?:\$\{\{.*|\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-[^}]*)?\}?|\$[A-Z_][A-Z0-9_]*|\$\(.*|\{\{.*|%\(.*"
    rb"|\{[A-Za-z_][A-Za-z0-9_]*\}|%[a-z]|<[^<>]*>?|![A-Za-z_]+(?:[ \t].*)?"
    rb"|\[FILTERED\]|\[REDACTED\]|REDACTED|redacted"
    rb"|(?i:true|false|yes|no|on|off|none|null|nil|undefined|required|optional|enabled|disabled)"
    rb"|[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*(?:\(.*\)|\[.*\])"
    rb"|[^A-Za-z0-9\x80-\xff]*)[\\,;]*",
    re.DOTALL,
)


def _is_value(data: bytes, start: int, end: int) -> bool:
    return end > start and not _NOT_A_VALUE.fullmatch(data, start, end)


# ---- rule building blocks ---------------------------------------------------------------------------

_QUOTED = rb"""(?:"(?P<secret>(?:[^"\\\r\n]|\\.)*)"|'(?P<secret2>[^'\r\n]*)')"""
_BARE = rb"""(?P<secret3>[^\s"'`]+)"""
_VALUE = rb"(?:" + _QUOTED + rb"|" + _BARE + rb")"
_SECRET_GROUPS = ("secret", "secret2", "secret3", "secret4")
# A name that may hold a secret: the regex only finds candidates, `secret_name` decides.
# The word must end where a word ends (`keyspace_hits`, `tokenizer`, `passed` are no candidates), so most
# names are turned down by the regex itself instead of a Python call per match.
_NAME = (
    rb"[A-Za-z0-9_.-]*(?i:pass(?:word|wd|phrase|code)?|pwd|pw|secret|token|key|auth|cred(?:ential)?s?"
    rb"|sig(?:nature)?|sess(?:ion)?(?:id)?|sid|dsn|psk|dockerc(?:fg|onfigjson))(?![a-z])[A-Za-z0-9_.-]*"
)
_NAME_NEEDLES = (
    b"pass",
    b"pwd",
    b"pw",
    b"secret",
    b"token",
    b"key",
    b"auth",
    b"cred",
    b"sig",
    b"sess",
    b"sid",
    b"dsn",
    b"psk",
    b"dockerc",
)
_QUERY_END = re.compile(rb"[&#]")
_CONN_END = re.compile(rb";[A-Za-z][A-Za-z0-9 _.-]*=")
_COMMENT = re.compile(rb"[ \t]+[#;].*$")
_LINE_END = re.compile(rb"[^\r\n]*")


def _group_span(match: re.Match[bytes]) -> Span | None:
    named = match.re.groupindex
    for group in _SECRET_GROUPS:
        if group in named and match.group(group) is not None:
            return match.span(group)
    if not named and match.re.groups >= 1:
        return match.span(1) if match.group(1) is not None else None  # user patterns: group 1 is the secret
    return match.span()


_PASSWORD_WORDS = frozenset(
    {
        b"PASSWORD",
        b"PASSWD",
        b"PASS",
        b"PWD",
        b"PW",
        b"PASSPHRASE",
        b"PASSCODE",
        b"BINDPW",
        b"ROOTPW",
        b"CREDENTIALS",
        b"CREDENTIAL",
        b"CREDS",
        b"PSK",
    }
)


def _kind(name: bytes, line_start: bool) -> str:
    """The placeholder's rule name for a secret NAME: password, env_secret (a .env line) or api_token."""
    if line_start:
        return "env_secret"
    words = _words(name)
    return (
        "password"
        if any(w in _PASSWORD_WORDS or w.endswith((b"PASSWORD", b"PASSWD")) for w in words)
        else "api_token"
    )


def _assignment(match: re.Match[bytes], data: bytes) -> tuple[int, int, str] | None:
    """`NAME = value` anywhere: a secret when the name says so; the value's end depends on the context."""
    if not secret_name(match.group("key")):
        return None
    span = _group_span(match)
    if span is None:
        return None
    start, end = span
    if match.group("secret3") is not None:
        key_start = match.start("key")
        before = data[key_start - 1 : key_start] if key_start else b""
        if before in (b"?", b"&"):  # a URL query: the value ends at the next parameter
            cut = _QUERY_END.search(data, start, end)
            end = cut.start() if cut else end
        elif before == b";" or b";" in data[start:end]:
            cut = _CONN_END.search(data, start, end)  # Key=Value;Key2=Value2 (Azure, ODBC, .NET)
            end = cut.start() if cut else end
        elif match.group("line") is not None and (match.group("sep") != b"=" or match.group("sp")):
            # A YAML `key: value` or INI `key = value` line: the value is the rest of the line.
            rest = _LINE_END.match(data, start)
            end = rest.end() if rest else end
            comment = _COMMENT.search(data, start, end)
            end = comment.start() if comment else end
            end = len(data[start:end].rstrip()) + start
    if not _is_value(data, start, end):
        return None
    env = match.group("line") is not None and match.group("sep") == b"=" and not match.group("q")
    return start, end, _kind(match.group("key"), env)


def _judged_by_name(group: str) -> Judge:
    def judge(match: re.Match[bytes], data: bytes) -> Span | None:
        if not secret_name(match.group(group)):
            return None
        span = _group_span(match)
        return span if span and _is_value(data, *span) else None

    return judge


def _flag(match: re.Match[bytes], data: bytes) -> tuple[int, int, str] | None:
    """`--db-password x`, `--token=x`: a secret when the flag's name is one and the value is no flag."""
    if not secret_name(match.group("key")):
        return None
    span = _group_span(match)
    if span is None or data[span[0] : span[0] + 1] == b"-" or not _is_value(data, *span):
        return None
    return span[0], span[1], _kind(match.group("key"), False)


def _token_user(match: re.Match[bytes], data: bytes) -> Span | None:
    """A URL's user name that is a token (git over https, Sentry DSNs), not a person's login."""
    start, end = match.span("secret")
    user = data[start:end]
    if re.fullmatch(rb"(?:gh[pousr]_|github_pat_|glpat-|x-token-auth|[0-9a-f]{32}).*", user) or (
        len(user) >= 20 and re.search(rb"[0-9]", user) and re.search(rb"[A-Za-z]", user)
    ):
        return start, end
    return None


def _plain(match: re.Match[bytes], data: bytes) -> Span | None:
    span = _group_span(match)
    return span if span and _is_value(data, *span) else None


_LINE = rb"(?P<line>(?m:^)[ \t]*(?:export[ \t]+|set[ \t]+|-[ \t]+|[+<>-](?![+<>-])[ \t]*)?)?"

# (name, needles, regex, flags, description, judge) — the catalogue. A rule runs only when one of its
# needles (lower case) occurs in the data. Specific rules come first: at equal spans the rule listed
# first names the placeholder.
RULE_TABLE: tuple[tuple[str, tuple[bytes, ...], bytes, int, str, Judge | None], ...] = (
    (
        "private_key",
        (b"private key",),
        (
            rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?:\\r|\\n|[\r\n])*"
            rb"(?P<secret>(?:(?!-----END)[\s\S])*?)"
            rb"(?=(?:\\r|\\n|[\r\n])*-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|\Z)"
        ),
        0,
        (
            "PEM and PGP private key blocks, also \\n-escaped in JSON "
            "(a block cut by the output cap is scrubbed to the end)"
        ),
        None,
    ),
    (
        "private_key",
        (b"private-lines:",),
        (
            rb"Private-Lines:[ \t]*\d+[ \t]*\r?\n"
            rb"(?P<secret>(?:[A-Za-z0-9+/=]+[ \t]*(?:\r?\n|\Z))+?)(?=Private-MAC:|\Z)"
            rb"|Private-MAC:[ \t]*(?P<secret2>[0-9a-fA-F]+)"
        ),
        0,
        "PuTTY private keys (.ppk): the private lines and their MAC",
        None,
    ),
    (
        "jwt",
        (b"eyj",),
        rb"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",
        0,
        "JSON Web Tokens",
        None,
    ),
    (
        "aws_access_key",
        (b"akia", b"asia", b"agpa", b"aida", b"aroa", b"anpa", b"anva", b"aipa", b"abia", b"acca"),
        rb"\b(?P<secret>(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA|ABIA|ACCA)[A-Z0-9]{16})\b",
        0,
        "AWS access key ids",
        None,
    ),
    (
        "webhook_url",
        (b"hooks.slack.com", b"/api/webhooks/", b"webhook.office.com"),
        (
            rb"(?:hooks\.slack\.com/(?:services|workflows|triggers)/|discord(?:app)?\.com/api/webhooks/\d+/"
            rb"|webhook\.office\.com/webhookb2/)(?P<secret>[A-Za-z0-9_/@.-]+)"
        ),
        0,
        "Slack, Discord and Teams incoming-webhook URLs (the path is the credential)",
        None,
    ),
    (
        "vendor_token",
        (
            b"ghp_",
            b"gho_",
            b"ghu_",
            b"ghs_",
            b"ghr_",
            b"github_pat_",
            b"xox",
            b"xapp-",
            b"_live_",
            b"_test_",
            b"whsec_",
            b"glpat-",
            b"aiza",
            b"sg.",
            b"sk-",
            b"hvs.",
            b"hvb.",
            b"hvr.",
            b"npm_",
            b"pypi-",
            b"dop_v1_",
            b"doo_v1_",
            b"glsa_",
            b"glc_",
            b"nrak-",
            b"shpat_",
            b"shpca_",
            b"shppa_",
            b"shpss_",
            b"xkeysib-",
            b"age-secret-key-",
            b"dp.",
            b":aa",
            b"key-",
            b"atatt",
        ),
        (
            rb"(?<![A-Za-z0-9_-])(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{40,}|xox[abposre]-[A-Za-z0-9-]{10,}"
            rb"|xapp-[A-Za-z0-9-]{20,}|(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}|whsec_[A-Za-z0-9]{20,}"
            rb"|glpat-[A-Za-z0-9_-]{20,}|AIza[0-9A-Za-z_-]{35}|SG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}"
            rb"|sk-(?:proj-|svcacct-|admin-|ant-[a-z]+\d*-)?[A-Za-z0-9_-]{20,}|hv[sbr]\.[A-Za-z0-9_-]{20,}"
            rb"|npm_[A-Za-z0-9]{36}|pypi-AgE[A-Za-z0-9_-]{50,}|do[opr]_v1_[a-f0-9]{64}|gl(?:sa|c)_[A-Za-z0-9_=-]{20,}"
            rb"|NRAK-[A-Z0-9]{27}|shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}|xkeysib-[a-f0-9]{64}-[A-Za-z0-9]{16}"
            rb"|AGE-SECRET-KEY-1[0-9A-Z]{58}|dp\.(?:st|pt|sa|ct|scim|audit)\.[A-Za-z0-9._-]{20,}"
            rb"|\d{8,10}:AA[A-Za-z0-9_-]{33}|key-[0-9a-f]{32}|ATATT3[A-Za-z0-9_=-]{20,})(?![A-Za-z0-9_-])"
        ),
        0,
        (
            "well-known token formats (GitHub, Slack, Stripe, GitLab, Google, SendGrid, OpenAI, Anthropic, "
            "Vault, npm, PyPI, DigitalOcean, Grafana, New Relic, Shopify, Brevo, age, Doppler, Telegram, "
            "Mailgun, Atlassian)"
        ),
        None,
    ),
    (
        "vendor_token",
        (b"/bot", b"-us"),
        rb"(?<=/bot)\d{8,10}:[A-Za-z0-9_-]{30,}|(?<![A-Za-z0-9_-])[0-9a-f]{32}-us\d{1,2}(?![A-Za-z0-9_-])",
        0,
        "Telegram bot tokens in API URLs, Mailchimp API keys",
        None,
    ),
    (
        "vendor_token",
        (b"sk",),
        rb"(?<![A-Za-z0-9_-])SK[0-9a-f]{32}(?![A-Za-z0-9_-])",
        0,
        "Twilio API key SIDs",
        None,
    ),
    (
        "aws_secret_key",
        (b"secret",),
        (
            rb"aws_?secret_?(?:access_?)?key[\"']?[ \t]*[=:][ \t]*[\"']?"
            rb"(?P<secret>[A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])"
        ),
        re.IGNORECASE,
        "AWS secret access keys",
        None,
    ),
    (
        "url_password",
        (b"://",),
        rb"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@\"'<>]*:(?P<secret>[^\s/\"'<>]+)@[^\s@/\"'<>?#]*(?=[:/?#\s\"'<>;,)]|$)",
        0,
        "passwords in DSNs and URLs: scheme://user:PASS@host (a raw @ in the password: the last @ wins)",
        _plain,
    ),
    (
        "url_token_user",
        (b"://",),
        rb"://(?P<secret>[^\s:/@\"'<>]{16,})(?::[^\s/\"'<>]*)?@",
        0,
        "a token used as a URL's user name (https://TOKEN@git..., Sentry DSN keys)",
        _token_user,
    ),
    (
        "redis_auth",
        (b"requirepass", b"masterauth"),
        rb"\b(?:requirepass|masterauth)[\"']?[ \t:=]+" + _VALUE,
        re.IGNORECASE,
        "Redis requirepass / masterauth in config or CONFIG SET",
        _plain,
    ),
    (
        "redis_auth",
        (b"requirepass", b"masterauth"),
        rb"\b(?:requirepass|masterauth)\"?\r?\n[ \t]*(?:\d+\)[ \t]*)?\"(?P<secret>[^\"\r\n]*)\"",
        re.IGNORECASE,
        "Redis CONFIG GET requirepass answers (value on the next line)",
        None,
    ),
    (
        "redis_auth",
        (b"auth",),
        rb"\bAUTH[ \t]+(?:[^\s]+[ \t]+)?(?P<secret>[^\s]+)",
        0,
        "Redis AUTH [user] <password> (and SMTP AUTH PLAIN <credentials>)",
        None,
    ),
    (
        "redis_auth",
        (b"rediscli_auth",),
        rb"\bREDISCLI_AUTH[ \t]*[=:][ \t]*" + _VALUE,
        0,
        "the REDISCLI_AUTH environment variable",
        None,
    ),
    (
        "redis_auth",
        (b"redis-cli",),
        rb"\bredis-cli\b[^\n]*?[ \t](?:-a|--pass)[ \t]+" + _VALUE,
        0,
        "redis-cli -a <password> on a command line",
        _plain,
    ),
    (
        "redis_auth",
        (b"setuser",),
        rb"\bACL[ \t]+SETUSER\b[^\n]*?[ \t]>(?P<secret>[^\s]+)",
        re.IGNORECASE,
        "Redis ACL SETUSER ... >password",
        None,
    ),
    (
        "sql_password",
        (b"password", b"identified"),
        (
            rb"\b(?:password|identified[ \t]+by)[ \t]+(?:=[ \t]*)?"
            rb"(?:'(?P<secret>[^'\r\n]*)'|\"(?P<secret2>[^\"\r\n]*)\")"
        ),
        re.IGNORECASE,
        "SQL: ALTER ROLE ... PASSWORD 'x', IDENTIFIED BY 'x', SET PASSWORD = 'x'",
        None,
    ),
    (
        "command_password",
        (
            b"mysql",
            b"sshpass",
            b"redis-cli",
            b"docker",
            b"twine",
            b"ldap",
            b"zip",
            b"7z",
            b"ssh-keygen",
            b"smbclient",
            b"htpasswd",
            b"rabbitmqctl",
            b"pass:",
            b"chpasswd",
            b"smbd",
            b"mongo",
            b"az",
            b"sqlcmd",
            b"bcp",
            b"osql",
            b"openssl",
        ),
        rb"(?:\bmysql(?:dump|admin|import|slap|check|sh)?\b[^\n]*?[ \t]-p"
        rb"|\b(?:sshpass|7z|7za)\b[^\n]*?[ \t]-p[ \t]*"
        rb"|\b(?:docker\b[^\n]*?\blogin\b[^\n]*?[ \t]-p|twine\b[^\n]*?[ \t]-p"
        rb"|mongo(?:sh|dump|restore)?\b[^\n]*?[ \t]-p|ldap[a-z]*\b[^\n]*?[ \t]-w|(?:un)?zip\b[^\n]*?[ \t]-P"
        rb"|ssh-keygen\b[^\n]*?[ \t]-[NP]|az\b[^\n]*?\blogin\b[^\n]*?[ \t]-p"
        rb"|(?:sqlcmd|bcp|osql)\b[^\n]*?[ \t]-P"
        rb"|openssl\b[^\n]*?[ \t]-k)[ \t]+"
        rb"|\b(?:smbclient|smbd|mount\.cifs)\b[^\n]*?[ \t]-U[ \t]*[^\s%]+%"
        rb"|\bhtpasswd[ \t]+-[a-zA-Z]*b[a-zA-Z]*[ \t]+\S+[ \t]+\S+[ \t]+"
        rb"|\brabbitmqctl[ \t]+(?:add_user|change_password)[ \t]+\S+[ \t]+"
        rb"|\becho[ \t]+['\"]?[^\s:'\"]+:(?=[^|\n]*\|[ \t]*chpasswd)"
        rb"|(?<![A-Za-z])(?:pass|env):(?=\S))" + _VALUE,
        0,
        (
            "passwords on command lines: mysql -pX, sshpass -p, docker login -p, ldapsearch -w, "
            "zip -P, ssh-keygen -N, az login -p, sqlcmd -P, openssl -k / pass:X, smbclient -U u%X, "
            "htpasswd -b, rabbitmqctl, chpasswd"
        ),
        _plain,
    ),
    (
        "command_password",
        (b"|",),
        rb"\b(?:echo|printf)[ \t]+(?:-[a-zA-Z]+[ \t]+)*(?:['\"]%s(?:\\n)?['\"][ \t]+)?"
        + _VALUE
        + rb"(?=[ \t]*\|[^\n|]*(?:--password-stdin|--stdin\b|\bsudo\b[^\n|]*[ \t]-S\b|\bchpasswd\b"
        rb"|\blogin[ \t]+-(?=\s|\Z)))",
        0,
        (
            "a password piped into a command: echo X | sudo -S, docker login --password-stdin, "
            "passwd --stdin, vault login -"
        ),
        _plain,
    ),
    (
        "basic_auth",
        (b"curl", b"wget"),
        (
            rb"\b(?:curl|wget)\b[^\n]*?[ \t]"
            rb"(?:(?:-u|--user)[ \t=]*['\"]?[^\s:'\"]*:|(?:--password|--http-password)[ \t=]+)"
            rb"['\"]?(?P<secret>[^\s'\"]+)"
        ),
        0,
        "curl -u user:password, wget --password",
        None,
    ),
    (
        "cookie",
        (b"cookie",),
        rb"\b(?:Set-)?Cookie[ \t]*:[ \t]*(?P<secret>[^\r\n]+)",
        re.IGNORECASE,
        "Cookie / Set-Cookie header values (sessions)",
        None,
    ),
    (
        "authorization",
        (b"authorization",),
        (
            rb"\bAuthorization[\"']?[ \t]*[:=][ \t]*[\"']?"
            rb"(?:(?:Bearer|Basic|Token|Digest|ApiKey|Negotiate)[ \t]+)?"
            rb"(?P<secret>[^\s\"',;]+)"
        ),
        re.IGNORECASE,
        "Authorization: Bearer/Basic/Token <credential>",
        _plain,
    ),
    (
        "authorization",
        (b"bearer",),
        rb"\bBearer[ \t]+(?P<secret>[A-Za-z0-9._~+/=-]{8,})",
        re.IGNORECASE,
        "bearer tokens anywhere",
        None,
    ),
    (
        "shadow_hash",
        (b"$",),
        (
            rb"(?m:^)[A-Za-z_][A-Za-z0-9_.-]*:(?P<secret>\$(?:1|2[abxy]?|5|6|y|gy|7|apr1|argon2(?:id|i|d)?|sha1|md5)\$"
            rb"[^:\s]+)(?=:|[ \t]*(?:\r?\n|\Z))"
        ),
        0,
        "password hashes in shadow and htpasswd lines",
        None,
    ),
    (
        "netrc",
        (b"password", b"bindpw", b"rootpw", b"auth_pass", b"secret", b"psk"),
        rb"(?:\blogin[ \t]+\S+[ \t]+password"
        rb"|(?m:^)[ \t]*(?:password|bindpw|rootpw|auth_pass|secret|passphrase|psk))"
        rb"[ \t]+" + _VALUE + rb"(?=[ \t]*(?:$|\n|\r|[ \t]account\b))",
        re.IGNORECASE | re.MULTILINE,
        "netrc `login u password X`, `password X` / `bindpw X` config lines",
        _plain,
    ),
    (
        "pgpass",
        (b":",),
        rb"(?m:^)[A-Za-z0-9_.*\[\]-]+:(?:\d+|\*):[^:\s]+:[^:\s]+:(?P<secret>\S+)[ \t]*$",
        re.MULTILINE,
        ".pgpass lines host:port:db:user:password",
        None,
    ),
    (
        "yaml_block",
        (b": |", b": >", b":|", b":>", b"!vault"),
        rb"(?m:^)(?P<indent>[ \t]*)(?:-[ \t]+)?[\"']?(?P<key>"
        + _NAME
        + rb")[\"']?:[ \t]*(?:![^\s|>]+[ \t]+)?"
        rb"[|>][-+0-9]*[ \t]*(?:#[^\n]*)?\n"
        rb"(?P<secret>(?:(?P=indent)[ \t]+\S[^\n]*(?:\n|\Z)|[ \t]*\n(?=(?P=indent)[ \t]))+)",
        0,
        "YAML block scalars (key: | or >) under a secret name",
        _judged_by_name("key"),
    ),
    (
        "xml_secret",
        (b"<",),
        rb"<(?P<key>" + _NAME + rb")(?:[ \t][^>]*)?>(?P<secret>[^<\r\n]+)</(?P=key)>"
        rb"|(?:name|key)=[\"'](?P<key2>" + _NAME + rb")[\"'][^>]*?(?:value=[\"'](?P<secret2>[^\"']*)[\"']"
        rb"|>(?P<secret3>[^<\r\n]+)<)",
        0,
        'XML: <password>X</password>, <add key="DbPassword" value="X"/>, <property name="...password">X<',
        lambda m, d: _judged_by_name("key" if m.group("key") is not None else "key2")(m, d),
    ),
    (
        "password",
        _NAME_NEEDLES,
        rb"(?<![A-Za-z0-9_-])--?(?P<key>" + _NAME + rb")(?:=|[ \t]+)(?=" + _VALUE + rb")",
        0,
        "command-line flags that carry a secret: --password X, --db-password=X, --token X, --api-key X",
        _flag,
    ),
    (
        "api_token",
        _NAME_NEEDLES,
        _LINE + rb"(?<![A-Za-z0-9_.-])(?P<q>[\"']?)(?P<key>" + _NAME + rb")(?P=q)(?P<sp>[ \t]*)"
        rb"(?P<sep>=>|=|:(?!//))[ \t]*(?=" + _VALUE + rb")",
        0,
        'NAME=value, NAME: value, "NAME": "value", ?NAME=value where the name says secret (see secret_name)',
        _assignment,
    ),
)

# Rules whose match spans lines scan the whole text; every other rule with needles runs line by line.
_MULTILINE_RULES = ("private_key", "yaml_block")
RULES: tuple[Rule, ...] = tuple(
    Rule(
        n,
        re.compile(p, f),
        d,
        k,
        j,
        line_local=bool(k) and n not in _MULTILINE_RULES,
        lines_after=1 if "next line" in d else 0,
    )
    for n, k, p, f, d, j in RULE_TABLE
)
_WHOLE_TEXT_SHARE = 0.3  # when needles sit in more of the lines than this, one scan beats line by line
_NEWLINE = re.compile(rb"\n")
_CHUNKED_MIN_LINES = 256  # shorter texts: one scan per rule costs less than finding its lines


def user_rules(patterns: Iterable[str]) -> list[Rule]:
    """Compile the user's extra regexes (Settings.redact_patterns); group 1 or the whole match is secret."""
    rules = []
    for i, text in enumerate(patterns, 1):
        try:
            rules.append(Rule(f"user{i}", re.compile(text.encode()), f"user pattern {text!r}"))
        except re.error as exc:
            raise UsageError(f"redact pattern {text!r} is not a valid regex: {exc}") from None
    return rules


def secrets_from_vars(vars_by_host: Mapping[str, Mapping[str, Any]] | Mapping[str, Any]) -> list[str]:
    """Values of inventory variables whose names say they are secrets (collector.inventory's one finder)."""
    from collector.inventory import secret_values_in

    return secret_values_in(vars_by_host)


def _literal_forms(secret: str | bytes) -> set[bytes]:
    """A known secret as it may appear: verbatim, percent-encoded (a URL or DSN), JSON-escaped (a job event,
    a JSON log) and, when long enough not to collide with ordinary text, base64 (a k8s Secret, a header)."""
    raw = secret.encode() if isinstance(secret, str) else bytes(secret)
    forms = {
        raw,
        urllib.parse.quote(raw, safe="").encode(),
        urllib.parse.quote_plus(raw).encode(),
        json.dumps(raw.decode("utf-8", "surrogateescape"))[1:-1].encode("utf-8", "surrogateescape"),
    }
    if len(raw) >= 8:
        forms.add(base64.b64encode(raw).rstrip(b"="))
    return forms


class Redactor:
    """Replaces secrets with «REDACTED:<rule>:<n>»; the same value always gets the same placeholder."""

    def __init__(
        self,
        extra_patterns: Iterable[str] = (),
        known_secrets: Iterable[str] = (),
        *,
        enabled: bool = True,
        start_numbers: dict[str, int] | None = None,
    ) -> None:
        self.enabled = enabled
        self.rules: list[Rule] = list(RULES) + user_rules(extra_patterns)
        # Every encoded form maps back to its secret, so all forms share one placeholder.
        self._canonical: dict[bytes, bytes] = {
            form: (s.encode() if isinstance(s, str) else bytes(s))
            for s in known_secrets
            if s is not None and len(s) >= _MIN_KNOWN_SECRET
            for form in _literal_forms(s)
        }
        literals = sorted(self._canonical, key=lambda b: (-len(b), b))
        if literals:
            self.rules.insert(
                0,
                Rule(
                    "known_secret",
                    re.compile(b"|".join(re.escape(x) for x in literals)),
                    "literal secret values passed in (e.g. inventory passwords)",
                ),
            )
        self._placeholders: dict[bytes, bytes] = {}
        self._numbers: dict[str, int] = dict(start_numbers or {})
        self.counts: dict[str, dict[str, int]] = {}
        self.failures: list[str] = []  # what *_or_withhold withheld, and why (for redaction.json)

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
        ends = [m.start() for m in _NEWLINE.finditer(data)] + [len(data)]
        cache: dict[bytes, list[int] | None] = {}  # needle -> the lines holding it
        for order, rule in enumerate(self.rules):
            try:
                spans += self._rule_spans(order, rule, data, lowered, ends, cache, taken)
            except Exception as exc:  # name the rule, not the data: the message lands in manifests and logs
                raise RedactionError(f"rule {rule.name} failed ({type(exc).__name__})") from exc
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

    def _rule_spans(
        self,
        order: int,
        rule: Rule,
        data: bytes,
        lowered: bytes,
        ends: list[int],
        cache: dict[bytes, list[int] | None],
        taken: list[tuple[int, int]],
    ) -> list[tuple[int, int, int, str]]:
        """The spans one rule marks as secret in `data`."""
        spans: list[tuple[int, int, int, str]] = []
        chunked = rule.line_local and len(ends) >= _CHUNKED_MIN_LINES  # _matches looks for the needles itself
        if rule.needles and not chunked and not any(n in lowered for n in rule.needles):
            return spans
        for match in self._matches(rule, data, lowered, ends, cache):
            name = rule.name
            if rule.judge is not None:
                judged = rule.judge(match, data)
                if judged is None:
                    continue
                start, end = judged[0], judged[1]
                name = judged[2] if len(judged) == 3 else name
            else:
                span = _group_span(match)
                if span is None:
                    continue
                start, end = span
            if start >= end:
                continue
            if (
                rule.judge is None
                and rule.name != "known_secret"
                and not rule.name.startswith("user")
                and not _is_value(data, start, end)
            ):
                continue
            if taken and any(s < end and start < e for s, e in taken):
                continue  # already a placeholder
            spans.append((start, end, order, name))
        return spans

    @staticmethod
    def _needle_lines(
        needle: bytes, lowered: bytes, ends: list[int], cache: dict[bytes, list[int] | None], budget: float
    ) -> list[int] | None:
        """The lines holding `needle` (None: more than `budget` of them); looked up once per text."""
        if needle not in cache:
            found: list[int] | None = []
            at = lowered.find(needle)
            while at >= 0 and found is not None:
                line = bisect.bisect_left(ends, at)
                found.append(line)
                if len(found) > budget:
                    found = None
                    break
                at = lowered.find(needle, ends[line] + 1)
            cache[needle] = found
        return cache[needle]

    def _matches(
        self, rule: Rule, data: bytes, lowered: bytes, ends: list[int], cache: dict[bytes, list[int] | None]
    ) -> Iterator[re.Match[bytes]]:
        """The rule's matches: over the whole text, or over the runs of lines that hold one of its needles.

        `ends` lists the offsets of the text's line ends (its newlines, then len(data))."""
        if not rule.line_local or len(ends) < _CHUNKED_MIN_LINES:
            yield from rule.pattern.finditer(data)
            return
        lines: set[int] = set()
        budget = len(ends) * _WHOLE_TEXT_SHARE
        for needle in rule.needles:
            found = self._needle_lines(needle, lowered, ends, cache, budget)
            if found is None:
                yield from rule.pattern.finditer(data)
                return
            for line in found:
                lines.update(range(line, min(line + rule.lines_after, len(ends) - 1) + 1))
            if len(lines) > budget:
                yield from rule.pattern.finditer(data)
                return
        run_start = run_end = -2
        for line in sorted(lines):
            if line != run_end + 1:
                if run_start >= 0:
                    yield from rule.pattern.finditer(
                        data, ends[run_start - 1] + 1 if run_start else 0, ends[run_end]
                    )
                run_start = line
            run_end = line
        if run_start >= 0:
            yield from rule.pattern.finditer(data, ends[run_start - 1] + 1 if run_start else 0, ends[run_end])

    def redact_bytes(self, data: bytes, where: str = "") -> bytes:
        """`data` with every secret replaced; `where` (a bundle-relative path) keys the counts.

        Raises RedactionError (never returns the input unscrubbed) when the data is not bytes or a
        rule fails; the caller withholds the data (see `redact_or_withhold`).
        """
        if not self.enabled:
            return data
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise RedactionError(f"redaction of {where or 'output'} needs bytes, got {type(data).__name__}")
        data = bytes(data)
        if not data:
            return data
        try:
            return self._redact(data, where)
        except RedactionError as exc:
            raise RedactionError(f"redaction of {where or 'output'} failed: {exc}") from exc
        except Exception as exc:  # a bug must not let the clear text through; its message may quote the data
            raise RedactionError(f"redaction of {where or 'output'} failed ({type(exc).__name__})") from exc

    def _redact(self, data: bytes, where: str) -> bytes:
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
        if not self.enabled:
            return text
        if not isinstance(text, str):
            raise RedactionError(f"redaction of {where or 'text'} needs str, got {type(text).__name__}")
        if not text:
            return text
        return self.redact_bytes(text.encode("utf-8", "surrogateescape"), where).decode(
            "utf-8", "surrogateescape"
        )

    def redact_or_withhold(self, data: bytes, where: str = "") -> tuple[bytes, str | None]:
        """(redacted data, None), or (a WITHHELD placeholder, the error) if redaction failed: fail closed."""
        try:
            return self.redact_bytes(data, where), None
        except RedactionError as exc:
            self.failures.append(str(exc))
            return WITHHELD.encode(), str(exc)

    def redact_text_or_withhold(self, text: str, where: str = "") -> str:
        """`text` redacted, or WITHHELD_TEXT when redaction failed (the failure kept in `failures`)."""
        try:
            return self.redact_text(text, where)
        except RedactionError as exc:
            self.failures.append(str(exc))
            return WITHHELD_TEXT

    def redact_value(self, value: Any, where: str = "") -> Any:
        """A JSON-like value (dicts, lists, strings) with every string redacted; other scalars as they are."""
        if isinstance(value, str):
            return self.redact_text(value, where)
        if isinstance(value, Mapping):
            return {k: self.redact_value(v, where) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.redact_value(v, where) for v in value]
        return value

    def total(self) -> int:
        """Substitutions made so far, all rules and files."""
        return sum(n for per_file in self.counts.values() for n in per_file.values())

    def describe(self) -> list[dict[str, str]]:
        """The rule catalogue as data (for redaction.json), without the user patterns' text."""
        seen: dict[str, str] = {}
        for rule in self.rules:
            seen.setdefault(
                rule.name, rule.description if not rule.name.startswith("user") else "user pattern"
            )
        return [{"rule": n, "description": d} for n, d in seen.items()]
