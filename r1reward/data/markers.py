"""One "this is complete" marker: a small JSON file written last and atomically, read back safely.

A folder (a tiny model, a cached chapter artifact, a training run) or a cache file is complete
when its marker is there and holds the settings it was made with. :func:`write_marker` writes the
marker through a temporary file and ``os.replace``, so a crash never leaves a half-written marker;
:func:`read_marker` gives ``None`` for a missing or unreadable one, which callers treat as "not
complete: build again".
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["read_marker", "write_marker"]


def write_marker(path: str | Path, info: Any, *, indent: int | None = None) -> Path:
    """Write ``info`` as JSON (one trailing newline) to ``path``, atomically; returns ``path``.

    Call it after everything the marker vouches for has been written.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(info, indent=indent) + "\n")
    os.replace(tmp, path)
    return path


def read_marker(path: str | Path) -> Any | None:
    """The JSON value of the marker at ``path``, or None when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
