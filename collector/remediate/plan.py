"""A Plan: what a mitigation would change, shown by a check-mode run, bound to everything that decides what
runs.

The content hash covers the action, the validated parameters, the targets, the check result and diffs,
and a `binding`: the digest of every inventory file, of each target's resolved connection and
`collector_*` variables (never in clear), of the ssh files those name, of the playbook, task files and
modules the action uses, and the tool's and Ansible's versions. `apply` recomputes the binding from the
current files and refuses on any difference, naming the part that changed.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import secrets
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from collector.config import Settings
from collector.core import PLAN_SCHEMA, Plan, UsageError, canonical_json, utcnow
from collector.inventory import Inventory, load_inventory
from collector.paths import resource
from collector.redact import Redactor
from collector.remediate.actions import Action, get_action, plan_deploy, validate_params
from collector.times import parse_instant

__all__ = [
    "PLAN_SCHEMA",
    "Plan",
    "binding_changes",
    "compute_binding",
    "describe",
    "load_plan",
    "make_plan",
    "plan_extravars",
    "playbook_path",
    "save_plan",
]

_PRIVATE_DIR = 0o700
_PRIVATE_FILE = 0o600


def plans_root(policy_dir: str | None) -> Path:
    """The playbooks folder: the policy's `playbooks_dir`, else the one shipped with the tool."""
    return Path(policy_dir) if policy_dir else resource("playbooks")


def playbook_path(action: Action, root: Path, deploy: str = "systemd") -> Path:
    """The action's playbook for targets deployed as `deploy` (the inventory's collector_deploy)."""
    return root / "remediate" / action.playbook_name(deploy)


def plan_extravars(plan: Plan, hosts_pattern: str | None = None) -> dict[str, Any]:
    """The Ansible variables for this plan's playbook (passed to Ansible marked unsafe: never templated)."""
    action = get_action(plan.action)
    extra = action.extravars(plan.params, hosts_pattern or ",".join(plan.targets))
    if action.request_time_var:
        extra[action.request_time_var] = int(parse_instant(plan.created).timestamp())
    return extra


# ---- the binding ------------------------------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        return f"unreadable: {exc.strerror}"


def _digest(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


_CONNECTION = re.compile(r"^(ansible_|collector_)")
_SSH_FILE_OPTS = re.compile(
    r"^(?:UserKnownHostsFile|GlobalKnownHostsFile|IdentityFile|CertificateFile)=(.+)$", re.IGNORECASE
)


def _ssh_files(hostvars: Mapping[str, Any]) -> list[str]:
    """Files the host's ssh arguments read (-F config, known_hosts, identity): their content decides the
    connection."""
    found: list[str] = []
    key = hostvars.get("ansible_ssh_private_key_file") or hostvars.get("ansible_private_key_file")
    if key:
        found.append(str(key))
    for name in ("ansible_ssh_common_args", "ansible_ssh_extra_args", "ansible_ssh_args"):
        try:
            words = shlex.split(str(hostvars.get(name) or ""))
        except ValueError:
            continue
        for i, word in enumerate(words):
            if word in ("-F", "-i") and i + 1 < len(words):
                found.append(words[i + 1])
            elif word == "-o" and i + 1 < len(words):
                match = _SSH_FILE_OPTS.match(words[i + 1])
                if match:
                    found.extend(match.group(1).split())
    return found


def _inventory_digests(inv: Inventory) -> dict[str, str]:
    files = {str(Path(f).resolve()) for f in inv.files}
    source = Path(inv.source)
    base = source if source.is_dir() else source.parent
    for sub in ("group_vars", "host_vars"):
        folder = base / sub
        if folder.is_dir():
            files.update(str(p.resolve()) for p in folder.rglob("*") if p.is_file())
    return {f: _sha256_file(Path(f)) for f in sorted(files)}


def _playbook_files(action: Action, root: Path, deploy: str = "systemd") -> list[Path]:
    """The action's playbook, the task files it includes, and the modules beside it (library/)."""
    book = playbook_path(action, root, deploy)
    files = [book]
    try:
        text = book.read_text()
    except OSError:
        return files
    folder = book.parent
    for name in sorted(set(re.findall(r"(?:include|import)_tasks:\s*[\"']?([\w./-]+\.ya?ml)", text))):
        files.append(folder / name)
    library = folder / "library"
    if library.is_dir():
        files.extend(sorted(p for p in library.rglob("*") if p.is_file() and "__pycache__" not in p.parts))
    return files


def compute_binding(action: Action, inv: Inventory, targets: list[str], playbooks: Path) -> dict[str, Any]:
    """Everything besides the plan's own fields that decides what `apply` would run."""
    import ansible.release

    import collector

    host_vars: dict[str, str] = {}
    ssh_files: dict[str, str] = {}
    try:  # the targets' collector_deploy picks the playbook; a change of it is a change of what runs
        deploy = plan_deploy(action, inv.hosts, targets)
    except UsageError as exc:
        deploy = f"unusable: {exc}"
    for host in targets:
        hostvars = inv.hosts.get(host, {})
        chosen = {k: v for k, v in sorted(hostvars.items()) if _CONNECTION.match(k)}
        host_vars[host] = _digest({"groups": sorted(inv.groups.get(host, [])), "vars": chosen})
        for name in _ssh_files(hostvars):
            path = Path(name).expanduser()
            ssh_files[str(path)] = _sha256_file(path)
    return {
        "tool_version": collector.__version__,
        "ansible_version": ansible.release.__version__,
        "inventory_files": _inventory_digests(inv),
        "host_vars": host_vars,
        "ssh_files": dict(sorted(ssh_files.items())),
        "playbooks_dir": str(playbooks.resolve()),
        "deploy": deploy,
        "playbook_files": {
            str(p.relative_to(playbooks)): _sha256_file(p)
            for p in (_playbook_files(action, playbooks, deploy) if deploy in action.deploys else [])
        },
    }


_BINDING_WORDS = {
    "tool_version": "the tool's version",
    "ansible_version": "Ansible's version",
    "inventory_files": "inventory file",
    "host_vars": "connection/collector_* variables of",
    "ssh_files": "ssh file",
    "playbooks_dir": "the playbooks folder",
    "deploy": "the targets' deployment kind (collector_deploy)",
    "playbook_files": "playbook file",
}


def binding_changes(before: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """What differs between the approved binding and the current one, as short phrases (empty: nothing)."""
    changes: list[str] = []
    for key, word in _BINDING_WORDS.items():
        old, new = before.get(key), now.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            for name in sorted(set(old) | set(new)):
                if name not in new:
                    changes.append(f"{word} {name} is gone")
                elif name not in old:
                    changes.append(f"{word} {name} is new")
                elif old[name] != new[name]:
                    changes.append(f"{word} {name} changed")
        else:
            changes.append(f"{word} changed ({old} -> {new})")
    return changes


# ---- making, saving, loading ------------------------------------------------------------------------------


def targets_for(action: Action, inv: Inventory, pattern: str) -> list[str]:
    """Hosts matching `pattern` with one of the action's roles (Inventory.roles); none → UsageError."""
    matched = inv.match(pattern)
    wanted = set(action.groups)
    targets = [h for h in matched if wanted & set(inv.roles(h))]
    if not targets:
        raise UsageError(
            f"{action.name} acts on hosts in group {'/'.join(action.groups)}; "
            f"pattern {pattern!r} matches none of them"
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
        before.splitlines(keepends=True),
        after.splitlines(keepends=True),
        fromfile=f"before: {diff.get('before_header', '')}".rstrip(),
        tofile=f"after: {diff.get('after_header', '')}".rstrip(),
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


def make_plan(
    action_name: str,
    pattern: str,
    raw_params: Mapping[str, str],
    settings: Settings,
    *,
    inventory: str | None = None,
    bundle: str | None = None,
    forks: int | None = None,
    playbooks_dir: str | None = None,
) -> Plan:
    """Validate, resolve targets, run the mitigation in check+diff mode and return the Plan (unsigned,
    unsaved)."""
    from collector.transport.ansible import run_playbook

    action = get_action(action_name)
    params = validate_params(action, raw_params)
    if bundle is not None and not Path(bundle).is_dir():
        raise UsageError(f"--bundle {bundle} is not a bundle directory")
    inv = load_inventory(inventory or settings.inventory)
    targets = targets_for(action, inv, pattern)
    deploy = plan_deploy(action, inv.hosts, targets)
    root = plans_root(playbooks_dir)
    created = utcnow()
    plan = Plan(
        id=f"{parse_instant(created):%Y%m%dT%H%M%SZ}-{action.name}-{secrets.token_hex(3)}",
        action=action.name,
        params=params,
        pattern=pattern,
        inventory=inv.source,
        targets=targets,
        created=created,
        bundle=str(Path(bundle).resolve()) if bundle else None,
    )
    run = run_playbook(
        playbook_path(action, root, deploy),
        inv.source,
        ",".join(targets),
        plan_extravars(plan),
        check=True,
        diff=True,
        forks=forks,
        unsafe_vars=True,
    )
    redactor = Redactor(
        settings.redact_patterns, inv.secret_values()
    )  # every host's: app .env holds db/redis ones
    pins: dict[str, str | None] = {}
    for host in targets:
        play = run.hosts.get(host)
        if play is None:
            plan.check[host] = {
                "status": "failed",
                "changed": False,
                "msg": f"no result from the check run ({run.status})",
            }
            continue
        plan.check[host] = {
            "status": play.status,
            "changed": bool(play.changed),
            "msg": redactor.redact_text(play_summary(play), "plan")[:2000],
        }
        texts = [redactor.redact_text(render_diff(d), "plan") for d in play.diffs]
        plan.diffs[host] = [t for t in texts if t.strip()]
        if action.pin_from_check:
            pins[host] = _pinned_value(action, play.results)
    if action.pin_from_check and plan.params.get(action.pin_from_check) == "previous":
        found = {v for v in pins.values() if v}
        if len(found) > 1:
            raise UsageError(
                f"{action.name}: the hosts resolve 'previous' to different values "
                f"({', '.join(sorted(found))});"
                f" name one with --param {action.pin_from_check}=..."
            )
        if found:
            plan.params[action.pin_from_check] = validate_params(
                action, {**plan.params, action.pin_from_check: found.pop()}
            )[action.pin_from_check]
    plan.binding = compute_binding(action, inv, targets, root)
    plan.hash = plan.compute_hash()
    return plan


def default_plan_path(plan: Plan, settings: Settings) -> Path:
    return Path(settings.plans_dir) / f"{plan.id}.json"


def private_dir(path: Path) -> None:
    """Create `path` (and missing parents) 0700; an existing folder of ours is tightened to 0700."""
    path.mkdir(parents=True, exist_ok=True, mode=_PRIVATE_DIR)
    try:
        if path.stat().st_uid == os.geteuid():
            os.chmod(path, _PRIVATE_DIR)
    except OSError:
        pass


def save_plan(plan: Plan, path: Path) -> Path:
    """Write the plan atomically (0600 temporary file + rename) in a 0700 folder."""
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _PRIVATE_FILE)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(plan.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n")
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
    return Plan.from_dict(doc, f"plan {file}")


def describe(plan: Plan) -> list[str]:
    """The plan as lines for a person to read before approving it."""
    action = get_action(plan.action)
    lines = [
        f"plan      {plan.id}",
        f"action    {plan.action} — {action.summary}",
        f"params    {', '.join(f'{k}={v}' for k, v in plan.params.items()) or '(none)'}",
        f"targets   {', '.join(plan.targets)}  (pattern {plan.pattern!r}, {len(plan.targets)} host(s))",
        f"requester {plan.requester or '(unsigned)'}   created {plan.created}",
        f"hash      {plan.hash}",
    ]
    if plan.bundle:
        lines.append(f"bundle    {plan.bundle}")
    binding = plan.binding or {}
    if binding.get("deploy"):
        lines.append(f"deploy    {binding['deploy']} (the targets' collector_deploy in the inventory)")
    if binding:
        lines.append(
            f"bound to  {len(binding.get('inventory_files', {}))} inventory file(s), "
            f"{len(binding.get('playbook_files', {}))} playbook/task/module file(s) in "
            f"{binding.get('playbooks_dir')}, collector {binding.get('tool_version')}, "
            f"ansible-core {binding.get('ansible_version')}"
        )
    for host in plan.targets:
        check = plan.check.get(host, {})
        word = {True: "would change", False: "no change"}[bool(check.get("changed"))]
        if check.get("status") in ("failed", "unreachable"):
            word = (
                f"CHECK {str(check.get('status')).upper()}: "
                f"{' '.join(str(check.get('msg', '')).split())[:300]}"
            )
        lines.append(f"  {host}: {word}" + (f" — {check.get('msg')}" if check.get("changed") else ""))
        for diff in plan.diffs.get(host, []):
            lines.extend("    " + line for line in diff.rstrip("\n").splitlines())
    approvals = plan.signed("approve", "break-glass")
    if approvals:
        last = approvals[-1]
        st = last.statement
        lines.append(
            f"approved  by {last.principal} at {st.time} until {st.expires}"
            + (f"  BREAK-GLASS: {st.reason}" if st.role == "break-glass" else "")
        )
    else:
        lines.append("approved  not yet: collector approve PLAN --key KEY (someone other than the requester)")
    return lines
