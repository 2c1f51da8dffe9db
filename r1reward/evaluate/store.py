"""The output folder of an evaluation: the resumable results file, its settings and its lock.

``results.jsonl`` is append-only, keyed by (pair_id, order, sample): :class:`ResultsStore` cuts a
torn last line (a kill mid-write) and never writes a key twice; ``config.json`` holds the settings
the records were made with (:func:`check_config` refuses to mix runs); ``.lock`` is held while a
run writes (:func:`output_lock`), so two runs never append to the same file.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from r1reward.data.jsonl import read_jsonl

__all__ = [
    "CONFIG_FILE",
    "LOCK_FILE",
    "RESULTS_FILE",
    "SUMMARY_JSON",
    "SUMMARY_MD",
    "OutputLocked",
    "ResultsStore",
    "SettingsMismatch",
    "check_config",
    "holding_output_lock",
    "load_records",
    "output_lock",
]

RESULTS_FILE = "results.jsonl"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
CONFIG_FILE = "config.json"
LOCK_FILE = ".lock"


def _key(record: dict[str, Any]) -> tuple[str, str, str]:
    return (str(record["pair_id"]), str(record["order"]), str(record["sample"]))


class ResultsStore:
    """Append-only JSONL of judgment records, keyed by (pair_id, order, sample).

    Opening it reads what is there, cuts off a torn last line (a kill during a write) and
    remembers the keys; :meth:`append` writes only records whose key is new, in one write, then
    flushes and fsyncs.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.keys: set[tuple[str, str, str]] = set()
        self.torn_lines = 0
        if self.path.exists():
            self._load_and_repair()

    def _load_and_repair(self) -> None:
        records = read_jsonl(
            self.path,
            torn_tail="cut",
            check=_key,
            what="judgment record",
            damaged="; the file is damaged before its last line",
        )
        self.keys.update(_key(rec) for rec in records)
        self.torn_lines += records.torn

    def __contains__(self, key: tuple[str, str, str]) -> bool:
        return key in self.keys

    def append(self, records: Iterable[dict[str, Any]]) -> int:
        """Write the records whose key is not stored yet; return how many were written."""
        lines = []
        for rec in records:
            key = _key(rec)
            if key in self.keys:
                continue
            self.keys.add(key)
            lines.append(json.dumps(rec, ensure_ascii=False) + "\n")
        if lines:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write("".join(lines))
                fh.flush()
                os.fsync(fh.fileno())
        return len(lines)


def load_records(path: str | Path) -> list[dict[str, Any]]:
    """All complete records of a results file (a torn last line is ignored, not repaired)."""
    return list(read_jsonl(path, torn_tail="skip"))


class SettingsMismatch(ValueError):
    """The output folder holds records made with other settings (resuming would mix them)."""


def check_config(path: Path, config: dict[str, Any]) -> None:
    """Write ``config`` to ``path``, or check that the one there equals it.

    Raises:
        SettingsMismatch: ``path`` holds other settings (naming each, old and new).
    """
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        diff = {k: (old.get(k), v) for k, v in config.items() if old.get(k) != v}
        if diff:
            raise SettingsMismatch(
                f"{path}: this output folder holds a run with other settings {diff} (old, new);"
                " resuming would mix them: use a new --out"
            )
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


class OutputLocked(RuntimeError):
    """Another run holds the output folder's lock (two writers would duplicate records)."""


@contextlib.contextmanager
def output_lock(out_dir: str | Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``out_dir/.lock`` while a run writes there.

    A second run on the same folder (another process, or another call in this one) raises
    :class:`OutputLocked` at once instead of appending duplicate lines to ``results.jsonl``. The
    lock goes with the process: a killed run leaves no stale lock behind.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    handle = (out / LOCK_FILE).open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise OutputLocked(
            f"{out}: another evaluation is writing here (it holds {out / LOCK_FILE}); wait for "
            "it to finish or use another --out"
        ) from None
    try:
        handle.truncate(0)
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def holding_output_lock(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` run under :func:`output_lock` of its ``out_dir`` keyword argument."""

    @functools.wraps(fn)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with output_lock(kwargs["out_dir"]):
            return fn(*args, **kwargs)

    return locked
