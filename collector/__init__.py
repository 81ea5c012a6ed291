"""incident collector: turn an incident runbook into one trusted tool."""
from __future__ import annotations

__version__ = "0.1.0"
