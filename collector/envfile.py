""".env-style captures: the key names and the operational values stay, every other value becomes a
fingerprint.

An app's settings file holds its database DSN, API tokens and the like next to the knobs an SRE needs
(pool size, rate limit, log level, feature flags, TTLs). The bundle keeps every key, keeps the value of an
allow-listed operational key when the value looks like a knob (a number, a boolean, a version, a short
word), and replaces every other value by `«REDACTED:hmac-sha256:1a2b3c4d»`: the first 8 hex digits of
HMAC-SHA256(key, "NAME=value"). It has the shape of the redactor's placeholders, so the redaction that runs
over the file afterwards leaves it as it is (and a reader sees at once that a value was taken out).

Why keyed: a short unsalted hash of a low-entropy password is found by brute force in seconds. The HMAC
key lives on the controller (`fingerprint_key`, default `~/.local/state/incident-collector/fingerprint.key`,
0600, created on first use), so "did DATABASE_URL change?" is answerable across every bundle made by the
same controller (same fingerprint = same value), and a fingerprint says nothing to someone without the key.
Bundles from two controllers are not comparable; redaction.json names the key by its id to tell.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

FINGERPRINT_HEX = 8
FINGERPRINT_OPEN = "«REDACTED:hmac-sha256:"
KEY_BYTES = 32
# The catalogue's `format:` of an entry whose output is a settings file in KEY=value form.
DOTENV_FORMAT = "dotenv"

_ASSIGNMENT = re.compile(
    r"^(?P<lead>\s*(?:#\s*)?(?:export\s+)?)(?P<key>[A-Za-z_][A-Za-z0-9_.-]*)(?P<eq>\s*=\s*)(?P<rest>.*)$"
)
# Words that end the key name of an operational knob (DATABASE_POOL_SIZE, ZOHO_RATE_LIMIT, CACHE_TTL...).
_KNOB_WORDS = frozenset(
    {
        "SIZE",
        "LIMIT",
        "TTL",
        "TIMEOUT",
        "LEVEL",
        "LOGLEVEL",
        "VERSION",
        "ENABLED",
        "DISABLED",
        "WORKERS",
        "THREADS",
        "CONCURRENCY",
        "RETRIES",
        "INTERVAL",
        "PORT",
        "DEBUG",
        "ENV",
        "ENVIRONMENT",
        "REPLICAS",
        "CONNECTIONS",
        "LENGTH",
        "COUNT",
        "DELAY",
        "BACKOFF",
        "BATCH",
        "PERIOD",
        "WINDOW",
        "PERCENT",
        "RATIO",
        "THRESHOLD",
        "CAPACITY",
        "TZ",
        "REGION",
        "MODE",
        "LOCALE",
    }
)
# Unit suffixes after a knob word: STATEMENT_TIMEOUT_MS, CACHE_TTL_SECONDS.
_UNIT_WORDS = frozenset(
    {"MS", "S", "SEC", "SECS", "SECONDS", "MIN", "MINUTES", "H", "HOURS", "BYTES", "KB", "MB", "MIB", "GB"}
)
# First words of feature flags and bounds: FEATURE_NEW_CHECKOUT, FF_BETA, MAX_UPLOAD_MB.
_KNOB_PREFIXES = frozenset({"FEATURE", "FEATURES", "FF", "FLAG", "ENABLE", "DISABLE", "USE", "MAX", "MIN"})
# A key with one of these words keeps only number/boolean/version values (TOKEN_TTL=3600 yes, a word no).
_SECRET_WORDS = re.compile(
    r"PASS|SECRET|TOKEN|KEY|CRED|AUTH|PRIVATE|DSN|SALT|SIGN|CERT|COOKIE|SESSION|PIN\b", re.IGNORECASE
)
_NUMBER = re.compile(r"^[+-]?\d+(?:\.\d+)?(?:[a-zA-Z%]{1,3})?$")
_BOOLEAN = re.compile(r"^(?:true|false|yes|no|on|off|enabled|disabled|none|null)$", re.IGNORECASE)
_VERSION = re.compile(r"^v?\d+(?:\.\d+){1,3}(?:[-+][0-9A-Za-z.]{1,20})?$")
_WORD = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,23}$")


def is_capture(entry: dict[str, Any]) -> bool:
    """Whether a catalogue entry captures a .env-style settings file."""
    return entry.get("format") == DOTENV_FORMAT


def capture_probes(entries: Iterable[dict[str, Any]]) -> frozenset[str]:
    """The names of the catalogue's .env-style captures."""
    return frozenset(str(e["name"]) for e in entries if is_capture(e))


def default_key_path() -> Path:
    """Where the controller's fingerprint key lives unless `fingerprint_key` says otherwise."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "incident-collector" / "fingerprint.key"


def load_key(path: str | Path | None = None) -> bytes:
    """The controller's HMAC key: read it, or create it (32 random bytes, 0600) the first time."""
    where = Path(path) if path else default_key_path()
    try:
        data = where.read_bytes()
    except FileNotFoundError:
        where.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fresh = secrets.token_bytes(KEY_BYTES)
        fd, tmp = tempfile.mkstemp(prefix=f".{where.name}.", dir=where.parent)  # 0600
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(fresh)
            os.link(tmp, where)  # appears whole or not at all; never replaces a key that exists
        except FileExistsError:  # another run created it a moment ago: use theirs
            return load_key(where)
        finally:
            os.unlink(tmp)
        return fresh
    if len(data) < 16:
        raise ValueError(f"fingerprint key {where} is shorter than 16 bytes")
    return data


def key_id(key: bytes) -> str:
    """A name for the key (not the key): bundles whose key ids differ have incomparable fingerprints."""
    return hashlib.sha256(b"incident-collector fingerprint key id\0" + key).hexdigest()[:12]


def fingerprint(key: bytes, name: str, value: str) -> str:
    """`«REDACTED:hmac-sha256:1a2b3c4d»` for one value of one key (the name is mixed in: equal values of two
    keys differ)."""
    digest = hmac.new(key, f"{name}={value}".encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()
    return f"{FINGERPRINT_OPEN}{digest[:FINGERPRINT_HEX]}»"


def is_operational(name: str, value: str) -> bool:
    """Whether `name=value` is an operational knob whose value may stay readable."""
    words = [w for w in re.split(r"[_.-]+", name.upper()) if w]
    if not words:
        return False
    last = words[-1]
    if last in _UNIT_WORDS and len(words) > 1:
        last = words[-2]
    knob = last in _KNOB_WORDS or words[0] in _KNOB_PREFIXES or name.upper() in ("LOG_LEVEL", "NODE_ENV")
    if not knob:
        return False
    if _NUMBER.match(value) or _BOOLEAN.match(value) or _VERSION.match(value):
        return True
    return not _SECRET_WORDS.search(name) and bool(_WORD.match(value))


def _unquote(rest: str) -> tuple[str, str, bool]:
    """(value, trailing comment, closed) of the text after `=`; closed is False for an open multi-line
    quote."""
    text = rest.strip()
    if text[:1] in ("'", '"'):
        quote = text[0]
        end = text.find(quote, 1)
        while end != -1 and quote == '"' and text[end - 1] == "\\":
            end = text.find(quote, end + 1)
        if end == -1:
            return text[1:], "", False
        tail = text[end + 1 :].strip()
        return text[1:end], (f" {tail}" if tail.startswith("#") else ""), True
    value, _, comment = text.partition(" #")
    return value.strip(), (f" #{comment}" if comment else ""), True


def filter_text(text: str, key: bytes) -> tuple[str, int]:
    """The settings file with every non-operational value fingerprinted; returns (text, values replaced).

    Lines that are neither comments nor assignments (a broken file) are fingerprinted whole: they may be
    a continuation of a secret.
    """
    out: list[str] = []
    replaced = 0
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        match = _ASSIGNMENT.match(line)
        if match is None:
            stripped = line.strip()
            if not stripped or (stripped.startswith("#") and "=" not in stripped):
                out.append(line)
            else:
                out.append(fingerprint(key, "", stripped))
                replaced += 1
            continue
        name, rest = match.group("key"), match.group("rest")
        value, comment, closed = _unquote(rest)
        if not closed:  # a quoted value over several lines (a PEM key): up to the closing quote
            quote = rest.strip()[0]
            parts = [value]
            while i < len(lines):
                nxt = lines[i]
                i += 1
                if quote in nxt:
                    parts.append(nxt[: nxt.index(quote)])
                    break
                parts.append(nxt)
            value = "\n".join(parts)
        prefix = f"{match.group('lead')}{name}{match.group('eq')}"
        if value == "" or is_operational(name, value):
            out.append(f"{prefix}{value}{comment}" if closed else f"{prefix}{fingerprint(key, name, value)}")
            replaced += 0 if closed else 1
        else:
            out.append(f"{prefix}{fingerprint(key, name, value)}")
            replaced += 1
    return "\n".join(out), replaced


def filter_bytes(data: bytes, key: bytes) -> tuple[bytes, int]:
    """filter_text for raw probe output (undecodable bytes kept as they are, then fingerprinted with the
    rest)."""
    text, replaced = filter_text(data.decode("utf-8", "surrogateescape"), key)
    return text.encode("utf-8", "surrogateescape"), replaced


__all__ = [
    "DOTENV_FORMAT",
    "FINGERPRINT_OPEN",
    "capture_probes",
    "default_key_path",
    "filter_bytes",
    "filter_text",
    "fingerprint",
    "is_capture",
    "is_operational",
    "key_id",
    "load_key",
]
