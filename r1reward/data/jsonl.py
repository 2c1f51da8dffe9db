"""One reader for the JSON Lines files r1reward appends to: results, curation records, metrics.

A process killed in the middle of a write leaves a *torn* last line. How a reader treats it is
the one thing that differs between files, so it is the one choice :func:`read_jsonl` offers:

``torn_tail="error"``
    Every non-blank line must parse (logs read after a run has finished).
``torn_tail="skip"``
    As ``"error"``, but an unreadable last line without its newline is ignored (reading a file
    that a writer may have left torn, without touching it).
``torn_tail="drop"``
    A record is complete only with its newline: the bytes after the last newline, and an
    unreadable final line, are a torn write and are left out. Damage anywhere else raises.
``torn_tail="cut"``
    As ``"drop"``, and the torn bytes are also cut off the file, so that appends start on a clean
    line (a resumable writer opening its own file).

Blank lines are skipped; line numbers count every line from 1.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

__all__ = ["JsonLines", "read_jsonl"]

TornTail = Literal["error", "skip", "drop", "cut"]


class JsonLines(list):
    """The records of a JSONL file (a ``list``), with ``torn``: the torn lines left out (0 or 1)."""

    def __init__(self, items: Iterable[Any] = (), *, torn: int = 0) -> None:
        super().__init__(items)
        self.torn = torn


def read_jsonl(
    path: str | Path,
    *,
    torn_tail: TornTail = "error",
    check: Callable[[Any], Any] | None = None,
    what: str = "JSON record",
    damaged: str = "",
) -> JsonLines:
    """Read the JSON records of ``path``, one per line (see the module docstring for ``torn_tail``).

    Args:
        path: the JSONL file (it must exist).
        torn_tail: ``"error"``, ``"skip"``, ``"drop"`` or ``"cut"``.
        check: called on each parsed record; a ``ValueError`` or ``KeyError`` it raises makes the
            line unreadable, exactly like malformed JSON.
        what: what a record is, for the error message (``"<path>:<line>: not a <what> (...)"``).
        damaged: appended to that message (e.g. why a bad line before the last is fatal).

    Returns:
        the records in file order, as a :class:`JsonLines` whose ``torn`` counts the torn lines
        left out.

    Raises:
        ValueError: an unreadable line that the mode does not tolerate, naming file and line.
    """
    if torn_tail not in ("error", "skip", "drop", "cut"):
        raise ValueError(f"torn_tail must be 'error', 'skip', 'drop' or 'cut', got {torn_tail!r}")
    path = Path(path)
    data = path.read_bytes()
    # "drop"/"cut": only newline-terminated lines are records; what follows the last newline is torn
    newline_rule = torn_tail in ("drop", "cut")
    end = data.rfind(b"\n") + 1 if newline_rule else len(data)
    *ended, rest = data[:end].split(b"\n")
    lines = [ln + b"\n" for ln in ended] + ([rest] if rest else [])
    records: list[Any] = []
    good_end, torn, pos = end, int(end < len(data)), 0
    for lineno, line in enumerate(lines, 1):
        start, pos = pos, pos + len(line)
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if check is not None:
                check(rec)
        except (ValueError, KeyError) as exc:
            last = lineno == len(lines)
            cut_short = newline_rule or (torn_tail == "skip" and not line.endswith(b"\n"))
            if last and not torn and cut_short:
                good_end, torn = start, 1
                break
            raise ValueError(f"{path}:{lineno}: not a {what} ({exc}){damaged}") from exc
        records.append(rec)
    if torn_tail == "cut" and good_end < len(data):
        with open(path, "r+b") as fh:
            fh.truncate(good_end)
    return JsonLines(records, torn=torn)
