"""Where the shipped data lives: inside the wheel (collector/_data) or in a source checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def resource(name: str) -> Path:
    """The folder `name` (playbooks, reports, inventory) of the installed tool."""
    shipped = _PACKAGE / "_data" / name
    if shipped.is_dir():
        return shipped
    checkout = _PACKAGE.parent / name
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"collector is installed without its {name}/ folder (looked in {shipped})")
