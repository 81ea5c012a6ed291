"""Fixtures for the report tests: real write_bundle output from crafted RunResults."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from report_fixtures import FINDINGS, make_run

from collector.bundle import Bundle, write_bundle
from collector.config import Settings


@pytest.fixture
def make_bundle(tmp_path: Path) -> Callable[..., Path]:
    """Write a synthetic bundle; optionally add findings.json / actions.json as triage/remediate would."""

    def build(
        n_web: int = 0,
        *,
        findings: dict[str, Any] | None = FINDINGS,
        actions: dict[str, Any] | None = None,
        secret_line: bool = True,
        name: str = "inc-test",
        out: Path | None = None,
        web_errors: bool = False,
    ) -> Path:
        settings = Settings(out_dir=str(tmp_path))
        path = write_bundle(
            make_run(n_web, secret_line=secret_line, incident=name, web_errors=web_errors),
            settings,
            out_dir=out or tmp_path,
            known_secrets=(),
        )
        bundle = Bundle.open(path)
        if findings is not None:
            bundle.write_json("findings.json", findings)
        if actions is not None:
            bundle.write_json("actions.json", actions)
        bundle.seal()
        return path

    return build
