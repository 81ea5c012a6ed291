"""Alertmanager's webhook payload (version 4) read strictly, and its alerts mapped to inventory hosts.

Pure functions: the server parses with `parse_payload`, picks the severity with `alert_severity` and the
hosts to collect from with `route_hosts`; none of them touches the network or the store.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from collector.core import SEVERITIES, severity_rank

# Alertmanager's severity words on the runbook's scale (README's severity table): critical pages are
# major degradation until triage says "complete outage"; warnings are minor.
SEVERITY_WORDS: dict[str, str] = {
    "page": "P1",
    "critical": "P1",
    "high": "P2",
    "error": "P2",
    "major": "P2",
    "warning": "P3",
    "minor": "P3",
    "low": "P3",
    "info": "P3",
}
# Labels that name a host directly (their value, or its host part for `instance`).
HOST_LABELS: tuple[str, ...] = ("host", "hostname", "nodename", "instance", "node", "server")


class PayloadError(ValueError):
    """The body is not an Alertmanager v4 webhook payload (the server answers 400 with this text)."""


@dataclass(frozen=True)
class Alert:
    status: str  # firing | resolved
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: str
    ends_at: str | None
    fingerprint: str
    generator_url: str = ""

    def as_mapping(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "labels": self.labels,
            "annotations": self.annotations,
            "startsAt": self.starts_at,
            "endsAt": self.ends_at,
            "fingerprint": self.fingerprint,
        }


@dataclass(frozen=True)
class Notification:
    """One webhook delivery: a group of alerts (firing or resolved as a whole in `status`)."""

    group_key: str
    status: str
    receiver: str
    alerts: tuple[Alert, ...]
    group_labels: dict[str, str] = field(default_factory=dict)
    common_labels: dict[str, str] = field(default_factory=dict)
    external_url: str = ""
    truncated: int = 0


def _labels(raw: Any, where: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise PayloadError(f"{where} must be an object")
    return {str(k): str(v) for k, v in raw.items()}


def _fingerprint(labels: Mapping[str, str]) -> str:
    import hashlib

    text = "\0".join(f"{k}\0{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_payload(doc: Any) -> Notification:
    """The notification; PayloadError naming the first thing wrong."""
    if not isinstance(doc, dict):
        raise PayloadError("the body must be a JSON object")
    if str(doc.get("version", "")) != "4":
        raise PayloadError(f"version {doc.get('version')!r} is not Alertmanager's webhook version 4")
    group_key = doc.get("groupKey")
    if not isinstance(group_key, str) or not group_key:
        raise PayloadError("groupKey must be a non-empty string")
    status = doc.get("status")
    if status not in ("firing", "resolved"):
        raise PayloadError(f"status {status!r} is not firing or resolved")
    raw_alerts = doc.get("alerts")
    if not isinstance(raw_alerts, list):
        raise PayloadError("alerts must be a list")
    alerts = []
    for i, raw in enumerate(raw_alerts):
        if not isinstance(raw, dict):
            raise PayloadError(f"alerts[{i}] must be an object")
        labels = _labels(raw.get("labels"), f"alerts[{i}].labels")
        starts = raw.get("startsAt")
        if not isinstance(starts, str) or not starts:
            raise PayloadError(f"alerts[{i}].startsAt must be a time string")
        ends = raw.get("endsAt")
        a_status = raw.get("status") or status
        if a_status not in ("firing", "resolved"):
            raise PayloadError(f"alerts[{i}].status {a_status!r} is not firing or resolved")
        alerts.append(
            Alert(
                status=str(a_status),
                labels=labels,
                annotations=_labels(raw.get("annotations"), f"alerts[{i}].annotations"),
                starts_at=starts,
                ends_at=ends if isinstance(ends, str) and not ends.startswith("0001-") else None,
                fingerprint=str(raw.get("fingerprint") or _fingerprint(labels)),
                generator_url=str(raw.get("generatorURL") or ""),
            )
        )
    truncated = doc.get("truncatedAlerts") or 0
    return Notification(
        group_key=group_key,
        status=str(status),
        receiver=str(doc.get("receiver") or ""),
        alerts=tuple(alerts),
        group_labels=_labels(doc.get("groupLabels"), "groupLabels"),
        common_labels=_labels(doc.get("commonLabels"), "commonLabels"),
        external_url=str(doc.get("externalURL") or ""),
        truncated=int(truncated) if isinstance(truncated, int) else 0,
    )


def alert_severity(alerts: Iterable[Alert]) -> str | None:
    """The worst severity the alerts' labels state (`priority`/`severity` P0–P3, or a word), or None."""
    found: list[str] = []
    for alert in alerts:
        for key in ("priority", "severity"):
            value = alert.labels.get(key, "").strip()
            if value.upper() in SEVERITIES:
                found.append(value.upper())
            elif value.lower() in SEVERITY_WORDS:
                found.append(SEVERITY_WORDS[value.lower()])
    return min(found, key=severity_rank) if found else None


@dataclass(frozen=True)
class Route:
    """Where to collect for a group of alerts, and why."""

    pattern: str
    hosts: tuple[str, ...]
    reasons: tuple[str, ...]
    matched: bool  # False: no label named a host, the fallback pattern was used


def parse_label_rules(rules: Iterable[str]) -> list[tuple[str, str | None, str]]:
    """`label=value:pattern` (the label has that value), `label=~regex:pattern` (its value matches the regex
    in full) or `label:pattern` (the label is present) rules, as (label, value or ~regex or None, pattern)."""
    out = []
    for rule in rules:
        m = re.fullmatch(r"\s*([A-Za-z_][A-Za-z0-9_]*)(?:=([^:]*))?:(.+?)\s*", rule)
        if not m:
            raise ValueError(
                f"label rule {rule!r} is not label=value:pattern, label=~regex:pattern or label:pattern"
            )
        value = m.group(2)
        if value is not None and value.startswith("~"):
            try:
                re.compile(value[1:])
            except re.error as exc:
                raise ValueError(f"label rule {rule!r}: {exc}") from None
        out.append((m.group(1), value, m.group(3)))
    return out


def _rule_matches(value: str | None, actual: str) -> bool:
    if value is None:
        return True
    if value.startswith("~"):
        return re.fullmatch(value[1:], actual) is not None
    return actual == value


def host_part(value: str) -> str:
    """`app1:8000` → app1, `[::1]:9100` → ::1, `http://db1:9187/metrics` → db1."""
    text = re.sub(r"^[a-z][a-z0-9+.-]*://", "", value.strip()).split("/", 1)[0]
    if text.startswith("["):
        return text[1:].split("]", 1)[0]
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


def route_hosts(
    alerts: Sequence[Alert],
    hostvars: Mapping[str, Mapping[str, Any]],
    groups: Iterable[str],
    rules: Iterable[str],
    fallback: str,
) -> Route:
    """Inventory patterns named by the alerts' labels: configured rules, then host labels (`instance`'s host
    part, `host`, ...) matched against inventory names and addresses, then `job` naming a group or host.
    None found: the fallback pattern, said so in the reasons."""
    by_address: dict[str, str] = {}
    for name, hv in hostvars.items():
        by_address[name] = name
        by_address.setdefault(name.split(".")[0], name)
        address = str(hv.get("ansible_host") or "")
        if address:
            by_address.setdefault(address, name)
    group_names = set(groups)
    patterns: list[str] = []
    reasons: list[str] = []

    def add(pattern: str, why: str) -> None:
        if pattern not in patterns:
            patterns.append(pattern)
            reasons.append(why)

    parsed = parse_label_rules(rules)
    for alert in alerts:
        labels = alert.labels
        for label, value, pattern in parsed:
            if label in labels and _rule_matches(value, labels[label]):
                add(pattern, f"{label}={labels[label]} → {pattern} (configured rule)")
        for label in HOST_LABELS:
            if label in labels:
                host = host_part(labels[label])
                found = by_address.get(host) or by_address.get(host.split(".")[0])
                if found:
                    add(found, f"{label}={labels[label]} → {found}")
        job = labels.get("job", "")
        if job and (job in group_names or job in hostvars):
            add(job, f"job={job} → {job}")
    if patterns:
        hosts = tuple(sorted({p for p in patterns if p in hostvars}))
        return Route(":".join(patterns), hosts, tuple(reasons), True)
    names = sorted({f"{k}={v}" for a in alerts for k, v in a.labels.items() if k in (*HOST_LABELS, "job")})
    said = ", ".join(names) or "none"
    why = (
        f"no alert label names an inventory host (host labels: {said}); "
        f"collecting the fallback pattern {fallback!r}"
    )
    return Route(fallback, (), (why,), False)
