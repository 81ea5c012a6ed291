"""A Plan: what a mitigation would change, shown by a check-mode run, bound by a content hash.

The hash covers every field but `hash` and `approval`, so editing targets, parameters or diffs
after the fact is seen by `apply`; the approval is stored in the same file and names that hash.
"""
from __future__ import annotations

import difflib
import getpass
import hashlib
import json
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from collector.config import Settings
from collector.core import UsageError, utcnow
from collector.inventory import Inventory, load_inventory
from collector.redact import Redactor
from collector.remediate.actions import Action, get_action, validate_params
from collector.times import parse_instant

PLAN_SCHEMA = "incident-collector/plan/v1"
_UNHASHED = ("hash", "approval")


@dataclass
class Plan:
    """A planned mitigation; `approval` is filled in by `collector approve`."""

    id: str
    action: str
    params: dict[str, Any]
    pattern: str
    inventory: str
    targets: list[str]
    requester: str
    created: str
    bundle: str | None = None
    check: dict[str, dict[str, Any]] = field(default_factory=dict)  # host -> status, changed, msg
    diffs: dict[str, list[str]] = field(default_factory=dict)  # host -> redacted unified diffs
    schema: str = PLAN_SCHEMA
    hash: str = ""
    approval: dict[str, Any] | None = None

    def content(self) -> dict[str, Any]:
        """The hashed part of the plan."""
        return {k: v for k, v in asdict(self).items() if k not in _UNHASHED}

    def compute_hash(self) -> str:
        canonical = json.dumps(self.content(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def created_epoch(self) -> float:
        return parse_instant(self.created).timestamp()

    def extravars(self, hosts_pattern: str | None = None) -> dict[str, Any]:
        """The Ansible variables for this plan's playbook."""
        action = get_action(self.action)
        extra = action.extravars(self.params, hosts_pattern or ",".join(self.targets))
        if action.request_time_var:
            extra[action.request_time_var] = int(self.created_epoch())
        return extra

    @property
    def changing_hosts(self) -> list[str]:
        return [h for h in self.targets if self.check.get(h, {}).get("changed")]

    @property
    def failed_hosts(self) -> list[str]:
        return [h for h in self.targets if self.check.get(h, {}).get("status") in ("failed", "unreachable")]


def requester_name(explicit: str | None, settings: Settings) -> str:
    """--as NAME, else $COLLECTOR_USER (settings.user), else the login name."""
    for name in (explicit, settings.user):
        if name and name.strip():
            return name.strip()
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in a container: the uid is still a name of sorts
        return f"uid{os.getuid()}"


def targets_for(action: Action, inv: Inventory, pattern: str) -> list[str]:
    """Hosts matching `pattern` with one of the action's roles (Inventory.roles); none → UsageError."""
    matched = inv.match(pattern)
    wanted = set(action.groups)
    targets = [h for h in matched if wanted & set(inv.roles(h))]
    if not targets:
        raise UsageError(
            f"{action.name} acts on hosts in group {'/'.join(action.groups)}; pattern {pattern!r} matches none of them"
        )
    return targets


def render_diff(diff: Any) -> str:
    """One Ansible 'diff' value (dict, list of dicts or prepared text) as unified diff text."""
    if isinstance(diff, list):
        return "".join(render_diff(d) for d in diff)
    if not isinstance(diff, Mapping):
        return str(diff or "")
    if diff.get("prepared"):
        return str(diff["prepared"]).rstrip("\n") + "\n"
    before, after = diff.get("before", ""), diff.get("after", "")
    if not isinstance(before, str):
        before = json.dumps(before, indent=2, sort_keys=True) + "\n"
    if not isinstance(after, str):
        after = json.dumps(after, indent=2, sort_keys=True) + "\n"
    if before == after:
        return ""
    lines = difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True),
        fromfile=f"before: {diff.get('before_header', '')}".rstrip(), tofile=f"after: {diff.get('after_header', '')}".rstrip(),
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def play_summary(play: Any) -> str:
    """One line per host: the failure, else what the playbook's Show/Report tasks said."""
    if play.status in ("failed", "unreachable"):
        return str(play.msg or play.status)
    said: list[str] = []
    for result in play.results:
        msg = str(result.get("msg") or "").strip()
        if msg and str(result.get("task", "")).startswith(("Show ", "Report ")) and msg not in said:
            said.append(msg)
    return "; ".join(said) or ("changed" if play.changed else "no change")


def redact(text: str, redactor: Redactor | None = None) -> str:
    """Text as it may appear in a plan, log or audit record."""
    return (redactor or Redactor()).redact_text(text, "plan")


_PIN = re.compile(r"(?:-> |already )(\S+) \(")


def _pinned_value(action: Action, results: list[dict[str, Any]]) -> str | None:
    """The value a check run resolved for `action.pin_from_check` (rollback: the tag), if it said."""
    for result in results:
        match = _PIN.search(str(result.get("msg") or ""))
        if match and "release" in str(result.get("msg")):
            return match.group(1)
    return None


def make_plan(action_name: str, pattern: str, raw_params: Mapping[str, str], settings: Settings, *,
              inventory: str | None = None, requester: str | None = None, bundle: str | None = None,
              forks: int | None = None) -> Plan:
    """Validate, resolve targets, run the mitigation in check+diff mode and return the Plan (unsaved)."""
    from collector.transport.ansible import run_playbook

    action = get_action(action_name)
    params = validate_params(action, raw_params)
    if bundle is not None and not Path(bundle).is_dir():
        raise UsageError(f"--bundle {bundle} is not a bundle directory")
    inv = load_inventory(inventory or settings.inventory)
    targets = targets_for(action, inv, pattern)
    created = utcnow()
    plan = Plan(
        id=f"{parse_instant(created):%Y%m%dT%H%M%SZ}-{action.name}-{secrets.token_hex(3)}",
        action=action.name, params=params, pattern=pattern, inventory=inv.source, targets=targets,
        requester=requester_name(requester, settings), created=created,
        bundle=str(Path(bundle).resolve()) if bundle else None,
    )
    run = run_playbook(action.playbook, inv.source, ",".join(targets), plan.extravars(), check=True, diff=True,
                       forks=forks)
    redactor = Redactor(settings.redact_patterns, inv.secret_values(targets))
    pins: dict[str, str | None] = {}
    for host in targets:
        play = run.hosts.get(host)
        if play is None:
            plan.check[host] = {"status": "failed", "changed": False, "msg": f"no result from the check run ({run.status})"}
            continue
        plan.check[host] = {"status": play.status, "changed": bool(play.changed),
                            "msg": redactor.redact_text(play_summary(play), "plan")[:2000]}
        texts = [redactor.redact_text(render_diff(d), "plan") for d in play.diffs]
        plan.diffs[host] = [t for t in texts if t.strip()]
        if action.pin_from_check:
            pins[host] = _pinned_value(action, play.results)
    if action.pin_from_check and plan.params.get(action.pin_from_check) == "previous":
        found = {v for v in pins.values() if v}
        if len(found) > 1:
            raise UsageError(f"{action.name}: the hosts resolve 'previous' to different values ({', '.join(sorted(found))});"
                             f" name one with --param {action.pin_from_check}=...")
        if found:
            plan.params[action.pin_from_check] = found.pop()
    plan.hash = plan.compute_hash()
    return plan


def default_plan_path(plan: Plan, settings: Settings) -> Path:
    return Path(settings.plans_dir) / f"{plan.id}.json"


def save_plan(plan: Plan, path: Path) -> Path:
    """Write the plan atomically (temporary file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(asdict(plan), indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def load_plan(path: str | Path) -> Plan:
    """Read a plan file; not a plan → UsageError."""
    file = Path(path)
    try:
        doc = json.loads(file.read_text())
    except FileNotFoundError:
        raise UsageError(f"plan {file} does not exist") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"plan {file} is unreadable: {exc}") from None
    if not isinstance(doc, dict) or doc.get("schema") != PLAN_SCHEMA:
        raise UsageError(f"{file} is not a plan ({PLAN_SCHEMA})")
    known = set(Plan.__dataclass_fields__)
    try:
        return Plan(**{k: v for k, v in doc.items() if k in known})
    except TypeError as exc:
        raise UsageError(f"plan {file} is incomplete: {exc}") from None


def describe(plan: Plan) -> list[str]:
    """The plan as lines for a person to read before approving it."""
    action = get_action(plan.action)
    lines = [
        f"plan      {plan.id}",
        f"action    {plan.action} — {action.summary}",
        f"params    {', '.join(f'{k}={v}' for k, v in plan.params.items()) or '(none)'}",
        f"targets   {', '.join(plan.targets)}  (pattern {plan.pattern!r}, {len(plan.targets)} host(s))",
        f"requester {plan.requester}   created {plan.created}",
        f"hash      {plan.hash}",
    ]
    if plan.bundle:
        lines.append(f"bundle    {plan.bundle}")
    for host in plan.targets:
        check = plan.check.get(host, {})
        word = {True: "would change", False: "no change"}[bool(check.get("changed"))]
        if check.get("status") in ("failed", "unreachable"):
            word = f"CHECK {str(check.get('status')).upper()}: {' '.join(str(check.get('msg', '')).split())[:300]}"
        lines.append(f"  {host}: {word}" + (f" — {check.get('msg')}" if check.get("changed") else ""))
        for diff in plan.diffs.get(host, []):
            lines.extend("    " + line for line in diff.rstrip("\n").splitlines())
    if plan.approval:
        a = plan.approval
        lines.append(f"approved  by {a.get('approver')} at {a.get('approved')}"
                     + (f"  BREAK-GLASS: {a.get('break_glass')}" if a.get("break_glass") else ""))
    else:
        lines.append("approved  not yet: collector approve PLAN --as NAME (someone other than the requester)")
    return lines
