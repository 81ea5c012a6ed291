"""The sample app's pure parts (no database, Redis or network): settings, masking, metrics, breaker."""

from __future__ import annotations

import difflib
import importlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from collector_lab import assets

RELEASE = assets() / "app" / "release"
BAD = assets() / "app" / "releases" / "v1.1.0"


@pytest.fixture(scope="module")
def sergas() -> Iterator[dict[str, ModuleType]]:
    """The release's modules that need only the stdlib, imported from lab/app/release."""
    sys.path.insert(0, str(RELEASE))
    try:
        yield {name: importlib.import_module(f"sergas.{name}") for name in ("config", "metrics", "breaker")}
    finally:
        sys.path.remove(str(RELEASE))
        for name in [m for m in sys.modules if m == "sergas" or m.startswith("sergas.")]:
            del sys.modules[name]


def test_env_file_parsing_keeps_values_and_strips_quotes(sergas: dict[str, ModuleType]) -> None:
    text = (
        "# comment\n\nDATABASE_URL=postgresql://u:p%40ss@db:5432/x\n"
        "export CACHE_TTL = 90\nNAME='quoted value'\nbad line\n"
    )
    assert sergas["config"].parse_env(text) == {
        "DATABASE_URL": "postgresql://u:p%40ss@db:5432/x",
        "CACHE_TTL": "90",
        "NAME": "quoted value",
    }


def test_urls_are_shown_with_the_password_masked(sergas: dict[str, ModuleType]) -> None:
    mask = sergas["config"].mask_url
    assert (
        mask("postgresql://sergas:s3cret@10.0.0.2:5432/sergas")
        == "postgresql://sergas:***@10.0.0.2:5432/sergas"
    )
    assert mask("redis://:r3dis@10.0.0.3:6379/0") == "redis://:***@10.0.0.3:6379/0"
    assert mask("http://127.0.0.1:8001") == "http://127.0.0.1:8001"


def test_config_public_view_never_holds_a_secret(sergas: dict[str, ModuleType], tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(
        "DATABASE_URL=postgresql://sergas:dbpwXYZ@10.0.0.2:5432/sergas\nREDIS_URL=redis://:rdpwXYZ@h:6379/0\n"
        "ZOHO_API_TOKEN=tokXYZ\nZOHO_RATE_LIMIT=30\nDATABASE_POOL_SIZE=7\n"
    )
    (tmp_path / "VERSION").write_text("9.9.9\n")
    cfg = sergas["config"].load(env, tmp_path)
    shown = repr(cfg.public())
    assert cfg.zoho_rate_limit == 30 and cfg.pool_size == 7 and cfg.version == "9.9.9"
    assert sorted(cfg.secrets) == ["dbpwXYZ", "rdpwXYZ", "tokXYZ"]
    for secret in cfg.secrets:
        assert secret not in shown
    assert "postgresql://sergas:***@10.0.0.2:5432/sergas" in shown


def test_histogram_buckets_are_cumulative_and_counts_add_up(sergas: dict[str, ModuleType]) -> None:
    reg = sergas["metrics"].Registry()
    for seconds, status in ((0.003, 200), (0.15, 200), (0.3, 500), (20.0, 500)):
        reg.observe("/api/orders", status, seconds)
    text = reg.render([("sergas_zoho_circuit_breaker_state", "gauge", "breaker", (), 1)])
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    assert lines['sergas_http_requests_total{path="/api/orders",status="500"}'] == "2"
    assert lines['sergas_http_request_duration_seconds_bucket{path="/api/orders",le="0.005"}'] == "1"
    assert lines['sergas_http_request_duration_seconds_bucket{path="/api/orders",le="0.2"}'] == "2"
    assert lines['sergas_http_request_duration_seconds_bucket{path="/api/orders",le="10.0"}'] == "3"
    assert lines['sergas_http_request_duration_seconds_bucket{path="/api/orders",le="+Inf"}'] == "4"
    assert lines['sergas_http_request_duration_seconds_count{path="/api/orders"}'] == "4"
    assert lines["sergas_zoho_circuit_breaker_state"] == "1"


def test_breaker_opens_after_threshold_and_half_opens_after_cooldown(sergas: dict[str, ModuleType]) -> None:
    cb = sergas["breaker"].CircuitBreaker("zoho", threshold=3, cooldown_s=0.05)
    assert [cb.failure() for _ in range(3)] == [False, False, True]
    assert cb.state == "open" and not cb.allow()
    import time

    time.sleep(0.06)
    assert cb.state == "half_open" and cb.allow()
    assert cb.failure() is True and cb.state == "open"  # a failed probe opens it again
    time.sleep(0.06)
    cb.success()
    assert cb.state == "closed" and cb.failures == 0


def test_a_forced_open_breaker_stays_open_until_closed_by_hand(sergas: dict[str, ModuleType]) -> None:
    cb = sergas["breaker"].CircuitBreaker("zoho", threshold=3, cooldown_s=0.0)
    cb.force_open()
    cb.success()
    assert cb.state == "open" and cb.status()["forced"] is True
    cb.force_close()
    assert cb.state == "closed" and cb.status()["value"] == 0


def test_secret_filter_masks_secrets_in_log_records() -> None:
    source = (RELEASE / "sergas" / "server.py").read_text()
    namespace: dict[str, object] = {}
    # SecretFilter is pure stdlib; compile just that class so the test needs neither psycopg2 nor redis.
    start = source.index("class SecretFilter")
    end = source.index("class HttpError")
    exec("from __future__ import annotations\nimport logging\n" + source[start:end], namespace)  # noqa: S102
    record = logging.LogRecord("sergas", logging.ERROR, __file__, 1, "auth failed for %s", ("pw-123",), None)
    assert namespace["SecretFilter"](["pw-123"]).filter(record)  # type: ignore[operator]
    assert record.getMessage() == "auth failed for ***"


def test_bad_release_differs_only_by_the_discount_code_column() -> None:
    good = (RELEASE / "sergas" / "queries.py").read_text().splitlines()
    bad = (BAD / "sergas" / "queries.py").read_text().splitlines()
    changed = [
        line
        for line in difflib.unified_diff(good, bad, lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    added = [line for line in changed if line.startswith("+") and "SELECT" in line]
    assert len(added) == 2 and all("o.discount_code" in line for line in added)
    assert (BAD / "VERSION").read_text().strip() == "1.1.0"
    assert (RELEASE / "VERSION").read_text().strip() == "1.0.0"
    schema = (assets() / "app" / "files" / "schema.sql").read_text()
    assert "discount_code" not in schema  # the column really is missing: v1.1.0 must fail


def test_zoho_mock_refuses_calls_over_its_quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("zoho_mock", assets() / "app" / "files" / "zoho_mock.py")
    assert spec and spec.loader
    mock = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mock)
    quota = tmp_path / "quota"
    quota.write_text("3\n")
    monkeypatch.setattr(mock, "QUOTA_FILE", str(quota))
    outcomes = [mock.admit() for _ in range(5)]
    assert [ok for ok, _ in outcomes] == [True, True, True, False, False]
    assert 1 <= outcomes[-1][1] <= 61  # Retry-After in seconds
    quota.write_text("600\n")
    assert mock.admit()[0] is True
