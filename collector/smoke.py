"""Runbook step 5's last line, "test critical flows" (its `smoke_test.py`), as data.

A deployment lists its critical flows in the inventory, as a group or host variable of its app hosts:
`collector_smoke_flows`, either a list or the path of a YAML file holding one (relative paths are read
from the inventory's folder). Each flow is one HTTP request against the host's own `collector_app_url`:

    collector_smoke_flows:
      - {name: health, path: /health, json: {status: healthy}}
      - {name: recent orders, path: /api/orders, status: 200, json_keys: [orders]}
      - {name: sync, method: POST, path: /api/zoho/sync, body: {}, contains: [synced]}

Fields: `name`, `path` (required; starts with /), `method` (GET, HEAD, POST, PUT, PATCH, DELETE; default
GET), `status` (default 200), `contains` (substrings the body must hold), `json_keys` (dotted keys the
JSON body must have), `json` (dotted key -> expected value), `body` (JSON sent with the request), `timeout_s`.

The requests run ON the app host (as the runbook's script would, and as verify's /health check does),
`collector_smoke_rounds` times (default 5), in one stdlib Python process over the host's SSH connection:
they are the flows' checks and also the traffic that verify's 5xx-ratio and p95 checks measure. Each
answer is judged on the host by `judge` (its source is shipped in the script), so only verdicts come back.
"""

from __future__ import annotations

import inspect
import json
import shlex
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.core import UsageError

FLOWS_VAR = "collector_smoke_flows"
ROUNDS_VAR = "collector_smoke_rounds"
DEFAULT_ROUNDS = 5
MAX_ROUNDS = 50
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
_FIELDS = {"name", "path", "method", "status", "contains", "json_keys", "json", "body", "timeout_s"}


@dataclass(frozen=True)
class Flow:
    """One critical request and what its answer must look like."""

    name: str
    path: str
    method: str = "GET"
    status: int = 200
    contains: tuple[str, ...] = ()
    json_keys: tuple[str, ...] = ()
    json: Mapping[str, Any] = field(default_factory=dict)
    body: Any = None
    timeout_s: float = 5.0

    def as_dict(self) -> dict[str, Any]:
        """The flow as the on-host script reads it (and `judge` checks it)."""
        return {
            "name": self.name,
            "path": self.path,
            "method": self.method,
            "status": self.status,
            "contains": list(self.contains),
            "json_keys": list(self.json_keys),
            "json": dict(self.json),
            "body": self.body,
            "timeout_s": self.timeout_s,
        }


# Traffic for the monitoring checks on an app host whose deployment lists no flows (not shown as a check:
# verify's own /health check already judges it).
HEALTH_FLOW = Flow("health", "/health")


@dataclass(frozen=True)
class FlowResult:
    """Every run of one flow on one host: how many, which failed and why, and how long they took."""

    flow: Flow
    host: str
    runs: int
    problems: tuple[str, ...]  # one per failed run
    millis: tuple[float, ...]

    @property
    def passed(self) -> bool:
        return self.runs > 0 and not self.problems

    def detail(self) -> str:
        """One line: the request, the verdict, the median time; the first problem when any run failed."""
        request = f"{self.flow.method} {self.flow.path}"
        if self.runs == 0:
            return f"{request}: not run"
        median = f"median {statistics.median(self.millis):.0f} ms" if self.millis else "no timing"
        if not self.problems:
            return f"{request}: {self.runs}/{self.runs} ok, {median}"
        return f"{request}: {len(self.problems)} of {self.runs} failed ({self.problems[0]}), {median}"


def _strings(value: Any, where: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
        raise UsageError(f"{where} must be a string or a list of non-empty strings, got {value!r}")
    return tuple(items)


def parse_flow(raw: Any, where: str) -> Flow:
    """One flow from its mapping; a bad field is a UsageError naming it."""
    if not isinstance(raw, Mapping):
        raise UsageError(f"{where} must be a mapping (name, path, ...), got {raw!r}")
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise UsageError(f"{where}: unknown field {unknown[0]!r}; fields are {', '.join(sorted(_FIELDS))}")
    name, path = raw.get("name"), raw.get("path")
    if not isinstance(name, str) or not name.strip():
        raise UsageError(f"{where}.name is required (a short text)")
    where = f"{where} ({name})"
    if not isinstance(path, str) or not path.startswith("/") or any(c.isspace() for c in path):
        raise UsageError(f"{where}.path must start with / and hold no spaces, got {path!r}")
    method = str(raw.get("method") or "GET").upper()
    if method not in METHODS:
        raise UsageError(f"{where}.method must be one of {', '.join(METHODS)}, got {raw.get('method')!r}")
    status = raw.get("status", 200)
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise UsageError(f"{where}.status must be an HTTP status 100..599, got {status!r}")
    expected = raw.get("json") or {}
    if not isinstance(expected, Mapping) or not all(isinstance(k, str) and k for k in expected):
        raise UsageError(f"{where}.json must map dotted keys to expected values, got {expected!r}")
    timeout = raw.get("timeout_s", 5.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 60:
        raise UsageError(f"{where}.timeout_s must be a number of seconds in (0, 60], got {timeout!r}")
    body = raw.get("body")
    try:
        json.dumps(body)
    except (TypeError, ValueError):
        raise UsageError(f"{where}.body must be JSON data") from None
    return Flow(
        name=name.strip(),
        path=path,
        method=method,
        status=status,
        contains=_strings(raw["contains"], f"{where}.contains") if "contains" in raw else (),
        json_keys=_strings(raw["json_keys"], f"{where}.json_keys") if "json_keys" in raw else (),
        json=dict(expected),
        body=body,
        timeout_s=float(timeout),
    )


def parse_flows(raw: Any, where: str = FLOWS_VAR) -> list[Flow]:
    """A list of flows; names must be unique (they name the checks)."""
    if not isinstance(raw, list) or not raw:
        raise UsageError(f"{where} must be a non-empty list of flows, got {raw!r}")
    flows = [parse_flow(item, f"{where}[{i}]") for i, item in enumerate(raw)]
    names = [f.name for f in flows]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise UsageError(f"{where}: two flows are called {dup!r}; names must be unique")
    return flows


def flows_for(hostvars: Mapping[str, Any], inventory_source: str = "") -> list[Flow]:
    """The host's configured flows (`collector_smoke_flows`: a list, or a YAML file's path); [] when unset."""
    raw = hostvars.get(FLOWS_VAR)
    if raw in (None, "", []):
        return []
    if isinstance(raw, str):
        path = Path(raw).expanduser()
        if not path.is_absolute() and inventory_source:
            base = Path(inventory_source)
            path = (base if base.is_dir() else base.parent) / path
        import yaml

        try:
            doc = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise UsageError(f"{FLOWS_VAR}: cannot read {path}: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise UsageError(f"{FLOWS_VAR}: {path} is not YAML: {str(exc).splitlines()[0]}") from None
        if isinstance(doc, Mapping) and FLOWS_VAR in doc:
            doc = doc[FLOWS_VAR]
        return parse_flows(doc, str(path))
    return parse_flows(raw)


def rounds_for(hostvars: Mapping[str, Any]) -> int:
    """How many times the flows run per verify pass (`collector_smoke_rounds`, default 5, 1..50)."""
    raw = hostvars.get(ROUNDS_VAR, DEFAULT_ROUNDS)
    text = str(raw).strip()
    if not text.isdigit() or not 1 <= int(text) <= MAX_ROUNDS:
        raise UsageError(f"{ROUNDS_VAR} must be a whole number 1..{MAX_ROUNDS}, got {raw!r}")
    return int(text)


def judge(flow: dict[str, Any], status: int | None, text: str) -> str | None:
    """Why an answer does not meet its flow (None when it does). Runs on the app host: stdlib only."""
    import json as _json

    if status != flow["status"]:
        return f"HTTP {status}, expected {flow['status']}"
    for needle in flow.get("contains") or []:
        if needle not in text:
            return f"body lacks {needle!r}"
    keys = list(flow.get("json_keys") or [])
    expected = dict(flow.get("json") or {})
    if not keys and not expected:
        return None
    try:
        doc = _json.loads(text)
    except ValueError:
        return "body is not JSON"
    missing = object()

    def lookup(key: str) -> Any:
        node: Any = doc
        for part in key.split("."):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return missing
        return node

    for key in keys + [k for k in expected if k not in keys]:
        if lookup(key) is missing:
            return f"no {key!r} in the JSON body"
    for key, want in expected.items():
        got = lookup(key)
        if got != want:
            return f"{key} is {got!r}, expected {want!r}"
    return None


_RUNNER = '''
import json, sys, time, urllib.error, urllib.request


def main():
    spec = json.loads(sys.argv[1])
    # Never through a proxy: the app answers on the host itself.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    out = []
    for _ in range(spec["rounds"]):
        for flow in spec["flows"]:
            data = None if flow["body"] is None else json.dumps(flow["body"]).encode()
            headers = {"Content-Type": "application/json"} if data is not None else {}
            headers["User-Agent"] = "incident-collector-verify"
            request = urllib.request.Request(
                spec["base"] + flow["path"], data=data, method=flow["method"], headers=headers
            )
            status, text, problem = None, "", None
            started = time.monotonic()
            try:
                with opener.open(request, timeout=flow["timeout_s"]) as answer:
                    status, text = answer.status, answer.read(1 << 20).decode("utf-8", "replace")
            except urllib.error.HTTPError as exc:
                status, text = exc.code, exc.read(1 << 20).decode("utf-8", "replace")
            except Exception as exc:
                reason = getattr(exc, "reason", None) or exc
                problem = "no answer: %s" % (str(reason).strip() or type(exc).__name__)
            millis = round((time.monotonic() - started) * 1000, 1)
            out.append({"flow": flow["name"], "problem": problem or judge(flow, status, text), "ms": millis})
    print(json.dumps(out))


main()
'''


def script() -> str:
    """The on-host runner: stdlib Python 3 with `judge` defined from this module's own source."""
    return "from __future__ import annotations\n" + inspect.getsource(judge) + _RUNNER


def command(base_url: str, flows: Sequence[Flow], rounds: int, python: str = "python3") -> str:
    """The shell command that runs `flows` `rounds` times against `base_url` on the host (quoted args)."""
    spec = {"base": base_url.rstrip("/"), "rounds": rounds, "flows": [f.as_dict() for f in flows]}
    return " ".join(shlex.quote(a) for a in (python, "-c", script(), json.dumps(spec)))


def results(flows: Sequence[Flow], host: str, rc: int, stdout: str, stderr: str) -> list[FlowResult]:
    """Per flow, the runs the script reported; a script that failed fails every flow with its reason."""
    try:
        rows = json.loads(stdout) if rc == 0 else None
    except ValueError:
        rows = None
    if not isinstance(rows, list):
        tail = (stderr or stdout).strip().splitlines()[-1:] or [f"rc {rc}"]
        why = f"the smoke runner failed (rc {rc}): {tail[0][:160]}"
        return [FlowResult(f, host, 1, (why,), ()) for f in flows]
    out = []
    for flow in flows:
        mine = [r for r in rows if isinstance(r, dict) and r.get("flow") == flow.name]
        problems = tuple(str(r["problem"]) for r in mine if r.get("problem"))
        millis = tuple(float(r.get("ms") or 0.0) for r in mine)
        out.append(FlowResult(flow, host, len(mine), problems, millis))
    return out


def run(
    host: Any, name: str, base_url: str, flows: Sequence[Flow], rounds: int, python: str = "python3"
) -> list[FlowResult]:
    """Run the flows on a testinfra host (never raises for what the host answers)."""
    done = host.run(command(base_url, flows, rounds, python))
    return results(flows, name, int(done.rc), str(done.stdout), str(done.stderr))
