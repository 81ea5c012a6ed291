"""Prometheus counters and histograms in the text exposition format, stdlib only."""
from __future__ import annotations

import threading
from collections import defaultdict

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    if not pairs:
        return ""
    inner = ",".join(f'{k}="{v}"' for k, v in pairs)
    return "{" + inner + "}"


class Registry:
    """The app's metrics: request counts and durations, plus gauges read at scrape time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str], int] = defaultdict(int)  # (path, status) -> n
        self.hist: dict[str, list[int]] = {}  # path -> cumulative-ready bucket counts (+Inf last)
        self.hist_sum: dict[str, float] = defaultdict(float)
        self.hist_count: dict[str, int] = defaultdict(int)
        self.zoho: dict[str, int] = defaultdict(int)  # upstream outcome -> n

    def observe(self, path: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(path, str(status))] += 1
            counts = self.hist.setdefault(path, [0] * (len(BUCKETS) + 1))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    counts[i] += 1
                    break
            else:
                counts[-1] += 1
            self.hist_sum[path] += seconds
            self.hist_count[path] += 1

    def zoho_call(self, outcome: str) -> None:
        with self._lock:
            self.zoho[outcome] += 1

    def render(self, gauges: list[tuple[str, str, str, tuple[tuple[str, str], ...], float]]) -> str:
        """The exposition text; `gauges` are (name, type, help, labels, value) read by the caller."""
        out: list[str] = [
            "# HELP sergas_http_requests_total HTTP requests served, by path and status.",
            "# TYPE sergas_http_requests_total counter",
        ]
        with self._lock:
            for (path, status), n in sorted(self.requests.items()):
                out.append(f'sergas_http_requests_total{{path="{path}",status="{status}"}} {n}')
            out += [
                "# HELP sergas_http_request_duration_seconds Time to serve an HTTP request.",
                "# TYPE sergas_http_request_duration_seconds histogram",
            ]
            for path, counts in sorted(self.hist.items()):
                running = 0
                for bound, n in zip(BUCKETS, counts):
                    running += n
                    out.append(f'sergas_http_request_duration_seconds_bucket{{path="{path}",le="{bound}"}} {running}')
                running += counts[-1]
                out.append(f'sergas_http_request_duration_seconds_bucket{{path="{path}",le="+Inf"}} {running}')
                out.append(f'sergas_http_request_duration_seconds_sum{{path="{path}"}} {self.hist_sum[path]:.6f}')
                out.append(f'sergas_http_request_duration_seconds_count{{path="{path}"}} {self.hist_count[path]}')
            out += [
                "# HELP sergas_zoho_requests_total Calls to the Zoho upstream, by outcome.",
                "# TYPE sergas_zoho_requests_total counter",
            ]
            for outcome, n in sorted(self.zoho.items()):
                out.append(f'sergas_zoho_requests_total{{outcome="{outcome}"}} {n}')
        seen: set[str] = set()
        for name, kind, help_text, labels, value in gauges:
            if name not in seen:
                out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
                seen.add(name)
            out.append(f"{name}{_labels(labels)} {value:g}")
        return "\n".join(out) + "\n"
