"""Runbook step 5: prove recovery. /health, 5xx ratio, p95, alerts, SELECT 1, Redis PING, services.

Host checks run through testinfra (its SSH backend built from the Ansible inventory's own host
vars: user, key, common args with the lab's known_hosts); monitoring checks ask Prometheus and
Alertmanager on the control machine. Every check is a value: name, host, passed, detail.
"""

from __future__ import annotations

import json
import re
import shlex
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from collector.config import Settings
from collector.inventory import Inventory
from collector.monitoring import Query, run_query, shape_alerts, shape_instant, urls
from collector.smoke import HEALTH_FLOW, flows_for, rounds_for
from collector.smoke import run as run_smoke
from collector.times import parse_instant, wait_until

ERROR_RATIO_MAX = 0.01  # runbook: 5xx ratio < 1 %
P95_MAX_S = 0.200  # runbook: p95 < 200 ms
MONITORING = "monitoring"


PASS, FAIL, UNKNOWN = "pass", "fail", "unknown"


@dataclass(frozen=True)
class Check:
    """One line of the checklist. `status` is pass, fail or unknown; unknown (no data) never passes."""

    name: str
    host: str
    passed: bool
    detail: str
    status: str = ""

    def __post_init__(self) -> None:
        if self.status not in ("", PASS, FAIL, UNKNOWN):
            raise ValueError(f"check status must be pass, fail or unknown, got {self.status!r}")
        if self.status == UNKNOWN and self.passed:
            raise ValueError("an unknown check cannot have passed")
        if not self.status:
            object.__setattr__(self, "status", PASS if self.passed else FAIL)
        elif (self.status == PASS) != self.passed:
            raise ValueError(f"status {self.status} contradicts passed={self.passed}")

    @classmethod
    def unknown(cls, name: str, host: str, detail: str) -> Check:
        """A check that could not be judged (no data): shown as UNKNOWN, and not a pass."""
        return cls(name, host, False, detail, UNKNOWN)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def testinfra_host(hostvars: Mapping[str, Any], name: str) -> Any:
    """A testinfra host over ssh built from the inventory's vars (host-key checking stays as configured)."""
    import testinfra

    if hostvars.get("ansible_connection") == "local" or name in ("local", "localhost"):
        return testinfra.get_host("local://")
    address = str(hostvars.get("ansible_host") or name)
    user = hostvars.get("ansible_user")
    spec = f"ssh://{user}@{address}" if user else f"ssh://{address}"
    if hostvars.get("ansible_port"):
        spec += f":{hostvars['ansible_port']}"
    args = ("ansible_ssh_common_args", "ansible_ssh_extra_args")
    extra = " ".join(str(hostvars.get(k) or "") for k in args).strip()
    kwargs: dict[str, Any] = {"ssh_extra_args": extra or None, "timeout": 10, "controlpersist": 30}
    key = hostvars.get("ansible_ssh_private_key_file") or hostvars.get("ansible_private_key_file")
    if key:
        kwargs["ssh_identity_file"] = str(key)
    return testinfra.get_host(spec, **kwargs)


def _service_checks(host: Any, name: str, service: str) -> list[Check]:
    running = host.run(f"systemctl is-active {shlex.quote(service)}").stdout.strip()
    enabled = host.run(f"systemctl is-enabled {shlex.quote(service)}").stdout.strip()
    return [
        Check("service active", name, running == "active", f"{service}: {running or 'unknown'}"),
        Check(
            "service enabled",
            name,
            enabled in ("enabled", "static", "alias"),
            f"{service}: {enabled or 'unknown'}",
        ),
    ]


def _health_check(host: Any, name: str, url: str) -> Check:
    result = host.run(f"curl -sS --max-time 5 {shlex.quote(url.rstrip('/') + '/health')}")
    try:
        doc = json.loads(result.stdout)
    except ValueError:
        detail = f"no JSON from /health (rc {result.rc}) {result.stderr.strip()[:120]}"
        return Check("/health healthy", name, False, detail)
    status = doc.get("status") if isinstance(doc, dict) else None
    bad = [k for k, v in (doc.get("checks") or {}).items() if _dep_bad(v)] if isinstance(doc, dict) else []
    detail = f"status {status}" + (f"; failing: {', '.join(bad)}" if bad else "")
    return Check("/health healthy", name, status == "healthy", detail)


def _dep_bad(value: Any) -> bool:
    if isinstance(value, dict):
        value = value.get("status", value.get("ok"))
    return value not in (True, "ok", "healthy", "up")


def _db_check(host: Any, name: str, hostvars: Mapping[str, Any]) -> Check:
    os_user = str(hostvars.get("collector_pg_os_user") or "postgres")
    database = str(hostvars.get("collector_pg_database") or "postgres")
    cmd = f"runuser -u {shlex.quote(os_user)} -- psql -X -At -c 'SELECT 1' {shlex.quote(database)}"
    result = host.run(cmd)
    ok = result.rc == 0 and result.stdout.strip() == "1"
    detail = "1" if ok else f"rc {result.rc}: {(result.stderr or result.stdout).strip()[:160]}"
    return Check("SELECT 1", name, ok, detail)


def _redis_check(host: Any, name: str, hostvars: Mapping[str, Any]) -> Check:
    port = int(hostvars.get("collector_redis_port") or 6379)
    # The password is read on the host from redis.conf into the environment: it never crosses
    # the wire nor sits in any process's argv.
    conf = shlex.quote(str(hostvars.get("collector_redis_conf") or "/etc/redis/redis.conf"))
    # Redis reads included files in order and the last requirepass wins: do the same.
    cmd = (
        f'conf={conf}; files="$conf $(awk \'$1=="include"{{print $2}}\' "$conf" 2>/dev/null)"; '
        "REDISCLI_AUTH=$(cat $files 2>/dev/null | sed -n 's/^requirepass[[:space:]]\\+//p'"
        " | tail -n 1 | tr -d '\"') "
        f"redis-cli --no-auth-warning -p {port} PING"
    )
    result = host.run(cmd)
    answer = result.stdout.strip()
    detail = answer[:80] or f"rc {result.rc}: {result.stderr.strip()[:120]}"
    return Check("Redis PING", name, answer == "PONG", detail)


def _compose_check(host: Any, name: str, hostvars: Mapping[str, Any]) -> Check:
    """Every container of the Compose service runs, healthy or without a healthcheck (`docker ps`)."""
    labels = (
        f"label=com.docker.compose.project={hostvars.get('collector_compose_project') or ''}",
        f"label=com.docker.compose.service={hostvars.get('collector_compose_service') or ''}",
    )
    engine = str(hostvars.get("collector_docker_host") or "unix:///var/run/docker.sock")
    cmd = (
        f"DOCKER_HOST={shlex.quote(engine)} docker ps -a --filter {shlex.quote(labels[0])}"
        f" --filter {shlex.quote(labels[1])} --format {shlex.quote('{{.Names}}: {{.Status}}')}"
    )
    result = host.run(cmd)
    rows = [r.strip() for r in result.stdout.splitlines() if r.strip()]
    up = [r for r in rows if ": Up " in r and "(unhealthy)" not in r and "(health: starting)" not in r]
    ok = result.rc == 0 and bool(rows) and len(up) == len(rows)
    detail = "; ".join(rows)[:160] or f"no container (rc {result.rc}) {result.stderr.strip()[:100]}"
    return Check("compose service running", name, ok, detail)


def host_checks(inv: Inventory, name: str, *, only_health: bool = False) -> list[Check]:
    """The per-host part of the checklist, by role; an unreachable host is one failed check."""
    return _host_pass(inv, name, only_health=only_health).checks


@dataclass
class _HostPass:
    checks: list[Check]
    requests: int = 0  # HTTP requests the smoke flows sent (traffic for the monitoring checks)


def _python(hostvars: Mapping[str, Any]) -> str:
    interpreter = str(hostvars.get("ansible_python_interpreter") or "")
    return interpreter if interpreter.startswith("/") else "python3"


def _smoke(host: Any, name: str, hostvars: Mapping[str, Any], source: str, *, as_checks: bool) -> _HostPass:
    """The host's smoke flows, `collector_smoke_rounds` times: their checks (when configured and wanted)
    and the number of requests sent. A host with no flows gets /health requests, as traffic only."""
    configured = flows_for(hostvars, source)
    flows = configured or [HEALTH_FLOW]
    base = str(hostvars["collector_app_url"])
    outcome = run_smoke(host, name, base, flows, rounds_for(hostvars), _python(hostvars))
    checks = [Check(f"flow: {r.flow.name}", name, r.passed, r.detail()) for r in outcome]
    return _HostPass(checks if configured and as_checks else [], sum(r.runs for r in outcome))


def _host_pass(
    inv: Inventory, name: str, *, only_health: bool = False, traffic_only: bool = False
) -> _HostPass:
    hostvars = inv.hosts.get(name, {})
    roles = inv.roles(name)
    app = "app" in roles and bool(hostvars.get("collector_app_url"))
    # Bad flow definitions are bad input (UsageError), raised before any connection.
    if app and not only_health:
        flows_for(hostvars, inv.source)
        rounds_for(hostvars)
    try:
        host = testinfra_host(hostvars, name)
        probe = host.run("true")
        if probe.rc != 0:
            why = (probe.stderr or "ssh failed").strip().splitlines()[-1][:160]
            return _HostPass([Check("reachable", name, False, why)])
        if traffic_only:
            return _smoke(host, name, hostvars, inv.source, as_checks=False) if app else _HostPass([])
        checks: list[Check] = []
        service = hostvars.get("collector_service")
        if service:
            checks += _service_checks(host, name, str(service))
        if app:
            checks.append(_health_check(host, name, str(hostvars["collector_app_url"])))
        if "compose" in roles and not app:  # the app as a Compose project: its containers, then /health
            checks.append(_compose_check(host, name, hostvars))
            if hostvars.get("collector_app_url"):
                checks.append(_health_check(host, name, str(hostvars["collector_app_url"])))
        if only_health:
            return _HostPass(checks)
        requests = 0
        if app:
            smoke = _smoke(host, name, hostvars, inv.source, as_checks=True)
            checks += smoke.checks
            requests = smoke.requests
        if "db" in roles:
            checks.append(_db_check(host, name, hostvars))
        if "redis" in roles:
            checks.append(_redis_check(host, name, hostvars))
        return _HostPass(checks, requests)
    except Exception as exc:  # noqa: BLE001 - a broken connection is a failed check, never a crashed verify
        return _HostPass([Check("reachable", name, False, f"{type(exc).__name__}: {str(exc).strip()[:160]}")])


def _window_expr(expr: str, window: str) -> str:
    """The runbook's PromQL with its rate window set to `window` (recovery is judged on recent traffic)."""
    return re.sub(r"\[\d+[smhd]\]", f"[{window}]", expr)


def _prom_query(base: str, name: str, expr: str, timeout_s: float) -> dict[str, Any]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    result = run_query(Query(name, "prometheus", url, shape_instant, {"query": expr}), timeout_s)
    answer: dict[str, Any] = json.loads(result.output)
    return answer


def _percent(value: float) -> str:
    return f"{value:.2%}"


def _millis(value: float) -> str:
    return f"{value * 1000:.0f} ms"


def wait_for_scrape(
    prometheus: str, addresses: Iterable[str], after: float, *, limit_s: float = 30.0, timeout_s: float = 5.0
) -> bool:
    """Wait until Prometheus has scraped the targets at `addresses` (else every healthy target) since the
    Unix time `after`, so a measure taken now holds the requests sent before it. Bounded by twice the
    targets' scrape interval (at most `limit_s`); False when it could not tell or gave up."""
    wanted = {a for a in addresses if a}
    bound: list[float] = []

    def scraped() -> bool:
        try:
            url = f"{prometheus}/api/v1/targets?state=active"
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                targets = json.load(response)["data"]["activeTargets"]
            up = [t for t in targets if t.get("health") == "up"]
            mine = [t for t in up if urllib.parse.urlsplit(str(t.get("scrapeUrl"))).hostname in wanted] or up
            if not bound:
                intervals = [_seconds(str(t.get("scrapeInterval") or "")) for t in mine]
                bound.append(min(limit_s, 2 * max(intervals, default=0.0) + 1.0))
            return bool(mine) and all(parse_instant(str(t["lastScrape"])).timestamp() >= after for t in mine)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            bound[:] = [0.0]  # no targets API (or a stand-in): nothing to wait for
            return False

    if scraped():
        return True
    return bool(bound and bound[0] > 0 and wait_until(scraped, bound[0], interval_s=0.5))


def _seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text.strip())
    if not match:
        return 0.0
    return float(match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[match.group(2)]


def denominator(expr: str) -> str | None:
    """The right-hand side of a ratio's last top-level `/` (the runbook's `5xx rate / all rate`), or None."""
    depth, quote = 0, ""
    cut = None
    for i, char in enumerate(expr):
        if quote:
            quote = "" if char == quote and expr[i - 1] != "\\" else quote
        elif char in "\"'`":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "/" and depth == 0:
            cut = i
    return expr[cut + 1 :].strip() or None if cut is not None else None


def measure_checks(
    settings: Settings,
    hostvars: Mapping[str, Any] | None = None,
    *,
    window: str = "30s",
    timeout_s: float = 5.0,
    requests_sent: int = 0,
) -> list[Check]:
    """The 5xx ratio and p95 from Prometheus over `window`.

    No value (no requests in the window: an empty answer, or 0/0) is UNKNOWN, never a pass. A ratio with
    no value whose denominator (all requests) has one is 0 %: the app has not answered a single 5xx since
    it started (its 5xx counters do not exist yet), which is not the same as no traffic.
    """
    prometheus, _ = urls(settings, hostvars)
    checks = []
    ours = f"; verify sent {requests_sent} requests" if requests_sent else "; verify sent no requests"
    for name, query, title, limit, shown in (
        ("error_ratio", settings.promql_error_ratio, "5xx ratio < 1%", ERROR_RATIO_MAX, _percent),
        ("p95_latency", settings.promql_p95, "p95 < 200 ms", P95_MAX_S, _millis),
    ):
        answer = _prom_query(prometheus, name, _window_expr(query, window), timeout_s)
        note = ""
        if answer.get("value") is None and not answer.get("error") and name == "error_ratio":
            total = denominator(query)
            if total:
                traffic = _prom_query(prometheus, "request_rate", _window_expr(total, window), timeout_s)
                if (traffic.get("value") or 0.0) > 0:
                    answer, note = {"value": 0.0}, " (no 5xx answers)"
        if answer.get("error"):
            checks.append(Check(title, MONITORING, False, str(answer["error"])[:160]))
        elif answer.get("value") is None:
            detail = f"no data: no requests in the last {window}{ours}"
            checks.append(Check.unknown(title, MONITORING, detail))
        else:
            value = float(answer["value"])
            detail = f"{shown(value)} over {window}{note}" + (ours if requests_sent else "")
            checks.append(Check(title, MONITORING, value < limit, detail))
    return checks


def alerts_check(
    settings: Settings,
    hostvars: Mapping[str, Any] | None = None,
    *,
    window: str = "30s",
    timeout_s: float = 5.0,
    allowed_alerts: Iterable[str] = (),
) -> Check:
    """Alertmanager's active alerts, less the expected ones and those whose condition is already clear."""
    prometheus, alertmanager = urls(settings, hostvars)
    alerts_url = f"{alertmanager}/api/v2/alerts?" + urllib.parse.urlencode(
        {"active": "true", "silenced": "false", "inhibited": "false"}
    )
    alerts = run_query(Query("alerts", "alertmanager", alerts_url, shape_alerts, {}), timeout_s)
    doc = json.loads(alerts.output)
    if doc.get("error"):
        return Check("no active alerts", MONITORING, False, str(doc["error"])[:160])
    allowed = set(allowed_alerts)
    active = [a for a in doc.get("alerts", []) if (a.get("state") or "active") == "active"]
    firing = [a for a in active if a.get("name") not in allowed]
    # An alert whose own condition is clear over `window` only lingers for its rule's 5m rate window.
    resolving = alerts_resolving(prometheus, {str(a.get("name")) for a in firing}, window, timeout_s)
    firing = [a for a in firing if a.get("name") not in resolving]
    names = sorted({str(a.get("name")) for a in firing})
    expected = sorted({str(a.get("name")) for a in active if a.get("name") in allowed})
    detail = "none" if not firing else f"{len(firing)} active: {', '.join(names)}"
    if expected:
        detail += f" (expected, raised by the mitigation: {', '.join(expected)})"
    if resolving:
        detail += f" (resolving: {', '.join(sorted(resolving))}, condition clear over the last {window})"
    return Check("no active alerts", MONITORING, not firing, detail[:200])


def monitoring_checks(
    settings: Settings,
    hostvars: Mapping[str, Any] | None = None,
    *,
    window: str = "30s",
    timeout_s: float = 5.0,
    allowed_alerts: Iterable[str] = (),
    requests_sent: int = 0,
) -> list[Check]:
    """5xx ratio and p95 from Prometheus over `window` (no data: UNKNOWN), and Alertmanager's alerts."""
    measures = measure_checks(
        settings, hostvars, window=window, timeout_s=timeout_s, requests_sent=requests_sent
    )
    alerts = alerts_check(
        settings, hostvars, window=window, timeout_s=timeout_s, allowed_alerts=allowed_alerts
    )
    return [*measures, alerts]


def alerts_resolving(prometheus: str, names: Iterable[str], window: str, timeout_s: float = 5.0) -> set[str]:
    """Alert names whose every Prometheus rule, re-evaluated over `window`, returns no series (clear now).

    Anything unknown (no such rule, an error, an unanswered query) keeps the alert counted as active.
    """
    wanted = set(names)
    if not wanted:
        return set()
    try:
        with urllib.request.urlopen(f"{prometheus}/api/v1/rules?type=alert", timeout=timeout_s) as response:
            groups = json.load(response).get("data", {}).get("groups", [])
    except (OSError, ValueError, AttributeError):
        return set()
    queries: dict[str, list[str]] = {}
    for group in groups:
        for rule in group.get("rules", []):
            if rule.get("name") in wanted and rule.get("query"):
                queries.setdefault(str(rule["name"]), []).append(str(rule["query"]))
    clear = set()
    for name, exprs in queries.items():
        answers = [_prom_query(prometheus, name, _window_expr(expr, window), timeout_s) for expr in exprs]
        if all(not a.get("error") and a.get("result") == [] for a in answers):
            clear.add(name)
    return clear


def run_checks(
    inv: Inventory,
    hosts: Iterable[str],
    settings: Settings,
    *,
    window: str = "30s",
    monitoring: bool = True,
    only_health: bool = False,
    allowed_alerts: Iterable[str] = (),
) -> list[Check]:
    """One pass of the checklist: every host at once (smoke flows included), then the monitoring checks.

    The monitoring checks measure the service, so before them verify makes sure there is traffic to
    measure: the app hosts among `hosts` ran their flows; when there are none (a db-only verify), the
    inventory's app hosts run theirs as traffic only. Then it waits for Prometheus to scrape them.
    """
    names = list(hosts)
    with ThreadPoolExecutor(max_workers=max(1, min(10, len(names)))) as pool:
        per_host = list(pool.map(lambda h: _host_pass(inv, h, only_health=only_health), names))
    checks = [c for group in per_host for c in group.checks]
    if not monitoring:
        return checks
    requests = sum(p.requests for p in per_host)
    driven = [h for h, p in zip(names, per_host, strict=True) if p.requests]
    if not any(_is_app(inv, h) for h in names):
        extra = [h for h in inv.hosts if _is_app(inv, h)]
        with ThreadPoolExecutor(max_workers=max(1, min(10, len(extra)))) as pool:
            traffic = list(pool.map(lambda h: _host_pass(inv, h, traffic_only=True), extra))
        requests += sum(p.requests for p in traffic)
        driven += [h for h, p in zip(extra, traffic, strict=True) if p.requests]
    anyvars = inv.hosts.get(names[0], {}) if names else {}
    prometheus, _ = urls(settings, anyvars)
    addresses = [str(inv.hosts[h].get("ansible_host") or h) for h in driven]
    for burst in range(2):
        if requests:
            wait_for_scrape(prometheus, addresses, time.time())
        measures = measure_checks(settings, anyvars, window=window, requests_sent=requests)
        if burst or not requests or all(c.status != UNKNOWN for c in measures):
            break
        # Counters the app created during the first burst (a fresh start) got their first sample from
        # that scrape, and rate() needs an increase between two: one more burst, one more scrape.
        with ThreadPoolExecutor(max_workers=max(1, min(10, len(driven)))) as pool:
            more = list(pool.map(lambda h: _host_pass(inv, h, traffic_only=True), driven))
        requests += sum(p.requests for p in more)
    checks += measures
    checks.append(alerts_check(settings, anyvars, window=window, allowed_alerts=allowed_alerts))
    return checks


def _is_app(inv: Inventory, name: str) -> bool:
    return "app" in inv.roles(name) and bool(inv.hosts.get(name, {}).get("collector_app_url"))


def verify(
    inv: Inventory,
    hosts: Iterable[str],
    settings: Settings,
    *,
    window: str = "30s",
    wait_s: float = 0.0,
    monitoring: bool = True,
    only_health: bool = False,
    allowed_alerts: Iterable[str] = (),
    progress: Callable[[list[Check]], None] | None = None,
) -> list[Check]:
    """The checklist, repeated every few seconds until it passes or `wait_s` has gone by."""
    names = list(hosts)

    def attempt() -> list[Check] | None:
        checks = run_checks(
            inv,
            names,
            settings,
            window=window,
            monitoring=monitoring,
            only_health=only_health,
            allowed_alerts=allowed_alerts,
        )
        last[:] = checks
        if passed(checks):
            return checks
        if progress:
            progress(checks)
        return None

    last: list[Check] = []
    return wait_until(attempt, wait_s, interval_s=5.0) or last


def passed(checks: Iterable[Check]) -> bool:
    """True when there is at least one check and every check passed (an unknown one has not)."""
    items = list(checks)
    return bool(items) and all(c.passed for c in items)


def table(checks: list[Check]) -> list[str]:
    """The checklist as aligned text lines: check, host, PASS/FAIL/UNKNOWN, detail."""
    if not checks:
        return ["(no checks ran)"]
    name_w = max(len("check"), *(len(c.name) for c in checks))
    host_w = max(len("host"), *(len(c.host) for c in checks))
    lines = [f"{'check':<{name_w}}  {'host':<{host_w}}  result   detail"]
    for c in checks:
        lines.append(f"{c.name:<{name_w}}  {c.host:<{host_w}}  {c.status.upper():<7}  {c.detail}")
    return lines
