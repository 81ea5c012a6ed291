"""Reading a JSON file that may be missing, unreadable or not JSON: one helper, one rule.

Used where such a file is optional (a bundle's redaction.json, ansible-runner's artifacts, a
monitoring answer). Where a bad file is the user's problem, callers read it themselves and say so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json(path: Path | str, default: Any = None, *, want: type | tuple[type, ...] = object) -> Any:
    """The parsed JSON at `path`; `default` when the file is missing, unreadable, not JSON or not a `want`."""
    try:
        value = json.loads(Path(path).read_bytes())
    except (OSError, ValueError):
        return default
    return value if isinstance(value, want) else default
