"""Control-machine monitoring queries: Prometheus (instant, range, targets) and Alertmanager alerts.

Each query becomes a ProbeResult(host="monitoring") whose output is one JSON document; an
unreachable or failing server is a failed (or timed out) probe with the error inside, never a crash.
urllib only, short timeouts, all queries at once.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from collector.config import Settings
from collector.core import ProbeResult, utcnow

MONITORING_HOST = "monitoring"
_MAX_BODY = 8 * 1024 * 1024  # a Prometheus answer bigger than this is not what we asked for


class QueryError(Exception):
    """A monitoring query that did not produce an answer (HTTP error, bad JSON, API error)."""


@dataclass(frozen=True)
class Query:
    """One monitoring query: its name in the bundle, where it goes and how its answer is shaped."""

    name: str
    source: str  # prometheus | alertmanager
    url: str
    shape: Callable[[Any], dict[str, Any]]
    extra: dict[str, Any]


def _get_json(url: str, timeout_s: float) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, headers={"Accept": "application/json", "User-Agent": "incident-collector"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            status, body = response.status, response.read(_MAX_BODY + 1)
    except urllib.error.HTTPError as exc:
        detail = exc.read(2048).decode("utf-8", "replace").strip()
        raise QueryError(f"HTTP {exc.code} from {_origin(url)}: {detail[:300]}") from None
    if len(body) > _MAX_BODY:
        raise QueryError(f"answer from {_origin(url)} is larger than {_MAX_BODY} bytes")
    try:
        return status, json.loads(body)
    except ValueError:
        raise QueryError(f"answer from {_origin(url)} is not JSON") from None


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return (
        f"{parts.scheme}://{parts.hostname}:{parts.port}"
        if parts.port
        else f"{parts.scheme}://{parts.hostname}"
    )


def _prometheus_data(doc: Any) -> Any:
    if not isinstance(doc, dict) or doc.get("status") != "success":
        error = doc.get("error") if isinstance(doc, dict) else None
        raise QueryError(f"Prometheus answered with an error: {error or doc!r}"[:300])
    return doc.get("data")


def _number(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value  # NaN (0/0 when there is no traffic) means unknown


def shape_instant(doc: Any) -> dict[str, Any]:
    """An instant query's answer: the first sample's value and the raw vector."""
    data = _prometheus_data(doc) or {}
    result = data.get("result") or []
    value = None
    if data.get("resultType") == "scalar" and isinstance(result, list) and len(result) == 2:
        value = _number(result[1])
    elif isinstance(result, list) and result and isinstance(result[0], dict):
        value = _number((result[0].get("value") or [None, None])[1])
    return {"kind": "instant", "value": value, "result": result}


def shape_range(doc: Any) -> dict[str, Any]:
    """A range query's answer: one series per label set, values as [unix_ts, float|None]."""
    data = _prometheus_data(doc) or {}
    series = [
        {
            "metric": item.get("metric", {}),
            "values": [[float(ts), _number(v)] for ts, v in item.get("values", [])],
        }
        for item in data.get("result") or []
        if isinstance(item, dict)
    ]
    return {"kind": "range", "series": series}


def shape_targets(doc: Any) -> dict[str, Any]:
    """Prometheus scrape targets: job, instance, health and the last scrape error."""
    data = _prometheus_data(doc) or {}
    targets = [
        {
            "job": t.get("labels", {}).get("job") or t.get("scrapePool"),
            "instance": t.get("labels", {}).get("instance"),
            "health": t.get("health"),
            "last_error": t.get("lastError") or None,
            "last_scrape": t.get("lastScrape"),
            "scrape_url": t.get("scrapeUrl"),
        }
        for t in data.get("activeTargets") or []
    ]
    return {"targets": sorted(targets, key=lambda t: (str(t["job"]), str(t["instance"])))}


def shape_alerts(doc: Any) -> dict[str, Any]:
    """Alertmanager's active alerts, oldest first."""
    if not isinstance(doc, list):
        raise QueryError("Alertmanager's answer is not a list of alerts")
    alerts = []
    for alert in doc:
        labels, notes = alert.get("labels", {}), alert.get("annotations", {})
        alerts.append(
            {
                "name": labels.get("alertname"),
                "state": (alert.get("status") or {}).get("state"),
                "severity": labels.get("severity"),
                "starts_at": alert.get("startsAt"),
                "ends_at": alert.get("endsAt"),
                "instance": labels.get("instance"),
                "summary": notes.get("summary") or notes.get("description"),
                "labels": labels,
                "annotations": notes,
            }
        )
    return {"alerts": sorted(alerts, key=lambda a: (str(a["starts_at"]), str(a["name"])))}


# The runbook's further Prometheus checks, instant queries as data (name in the bundle -> PromQL). The breaker
# is the runbook's `sergas_zoho_circuit_breaker_state` (0 closed, 1 open, 2 half-open); max: any app host's.
# The breaker closes again on the first call that gets through, so a rate-limited app flips between open,
# half-open and closed; its calls refused (429) or cut short by the open breaker over the last 2 minutes say
# whether the throttling is still going on (0, not empty, while the app exports the counter at all).
RUNBOOK_INSTANT_QUERIES: dict[str, str] = {
    "circuit_breaker_state": "max(sergas_zoho_circuit_breaker_state)",
    # Refused or short-circuited Zoho calls in the last 2 minutes. increase() counts nothing of a series that
    # first appears inside its range (the app exports outcome="429" only from the first 429 on), so a series
    # that did not exist 2 minutes ago counts its whole value; no such calls at all is 0, not "no data".
    "zoho_throttled_2m": "sum((increase({z}[2m]) and {z} offset 2m) or ({z} unless {z} offset 2m))"
    " or (0 * sum(sergas_zoho_requests_total))".format(
        z='sergas_zoho_requests_total{outcome=~"429|breaker_open"}'
    ),
}


def urls(settings: Settings, hostvars: Mapping[str, Any] | None = None) -> tuple[str, str]:
    """Prometheus and Alertmanager base URLs: inventory vars first, then settings."""
    hostvars = hostvars or {}
    prometheus = str(hostvars.get("collector_prometheus_url") or settings.prometheus_url).rstrip("/")
    alertmanager = str(hostvars.get("collector_alertmanager_url") or settings.alertmanager_url).rstrip("/")
    return prometheus, alertmanager


def queries(
    settings: Settings,
    hostvars: Mapping[str, Any] | None = None,
    *,
    range_minutes: float = 30,
    step_s: float = 30,
    now: float | None = None,
) -> list[Query]:
    """The monitoring queries of one collection, as data."""
    prometheus, alertmanager = urls(settings, hostvars)
    end = time.time() if now is None else now
    start = end - range_minutes * 60
    promql = {"error_ratio": settings.promql_error_ratio, "p95_latency": settings.promql_p95}
    found: list[Query] = []
    for name, expr in promql.items():
        found.append(
            Query(
                name,
                "prometheus",
                f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr, "time": f"{end:.3f}"}),
                shape_instant,
                {"query": expr},
            )
        )
        if range_minutes > 0:
            params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step_s:g}"}
            found.append(
                Query(
                    f"{name}_range",
                    "prometheus",
                    f"{prometheus}/api/v1/query_range?" + urllib.parse.urlencode(params),
                    shape_range,
                    {"query": expr, "start": start, "end": end, "step_s": step_s},
                )
            )
    for name, expr in RUNBOOK_INSTANT_QUERIES.items():
        found.append(
            Query(
                name,
                "prometheus",
                f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr, "time": f"{end:.3f}"}),
                shape_instant,
                {"query": expr},
            )
        )
    found.append(
        Query("targets", "prometheus", f"{prometheus}/api/v1/targets?state=active", shape_targets, {})
    )
    found.append(
        Query(
            "alerts",
            "alertmanager",
            f"{alertmanager}/api/v2/alerts?"
            + urllib.parse.urlencode({"active": "true", "silenced": "false", "inhibited": "false"}),
            shape_alerts,
            {},
        )
    )
    return found


def run_query(query: Query, timeout_s: float = 5.0) -> ProbeResult:
    """Run one query; every failure becomes the probe's status and the document's `error`."""
    started, t0 = utcnow(), time.monotonic()
    doc: dict[str, Any] = {"source": query.source, "url": query.url, **query.extra}
    status, error = "ok", None
    try:
        http_status, answer = _get_json(query.url, timeout_s)
        doc["http_status"] = http_status
        doc.update(query.shape(answer))
    except TimeoutError:
        status, error = "timeout", f"no answer from {_origin(query.url)} within {timeout_s:g}s"
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            status, error = "timeout", f"no answer from {_origin(query.url)} within {timeout_s:g}s"
        else:
            status, error = "failed", f"{_origin(query.url)} unreachable: {reason}"
    except (QueryError, OSError, ValueError, AttributeError, TypeError) as exc:
        status, error = "failed", str(exc) or type(exc).__name__
    doc["error"] = error
    output = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
    return ProbeResult(
        host=MONITORING_HOST,
        probe=query.name,
        command=f"GET {query.url}",
        status=status,  # type: ignore[arg-type]
        rc=None,
        started=started,
        duration_s=round(time.monotonic() - t0, 3),
        output=output,
        bytes=len(output),
        error=error,
    )


def collect_monitoring(
    settings: Settings,
    hostvars: Mapping[str, Any] | None = None,
    *,
    timeout_s: float = 5.0,
    range_minutes: float = 30,
    step_s: float = 30,
) -> list[ProbeResult]:
    """Every monitoring query at once; returns one ProbeResult per query, in catalogue order."""
    todo = queries(settings, hostvars, range_minutes=range_minutes, step_s=step_s)
    with ThreadPoolExecutor(max_workers=len(todo)) as pool:
        return list(pool.map(lambda q: run_query(q, timeout_s), todo))
