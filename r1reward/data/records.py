"""Raw records behind a preference file: JSONL/JSON/parquet rows, folders of shards, Hub ids.

:func:`iter_records` yields ``(number, where, record-or-error)`` for one file; the per-format
readers of :mod:`r1reward.data.formats` turn records into pairs and :func:`r1reward.data.io.load`
puts the two together.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from r1reward.data.schema import DataError

SHARD_SUFFIXES = (".parquet", ".jsonl", ".json")


def iter_records(path: Path) -> Iterator[tuple[int, str, dict[str, Any] | DataError]]:
    """Yield ``(number, where, record-or-error)``; ``where`` is "line", "record" or "row"."""
    if path.suffix == ".parquet":  # streamed in batches: R1-Reward-RL's parquet is ~3 GB
        import pyarrow.parquet as pq

        i = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=256):
            for rec in batch.to_pylist():
                i += 1
                yield i, "row", rec
        return
    with open(path, encoding="utf-8-sig") as f:
        head = f.read(4096).lstrip()
        f.seek(0)
        if head.startswith("["):  # a JSON array (Multimodal RewardBench's all_data.json)
            text = f.read()
        else:
            text = None
            yield from _iter_jsonl(path, f)
    if text is not None:
        try:
            arr = json.loads(text)
        except json.JSONDecodeError as e:
            yield (
                e.lineno,
                "line",
                DataError(
                    f"malformed JSON: {e.msg} (expected a JSON array of objects)",
                    path=path,
                    line=e.lineno,
                ),
            )
            return
        for i, rec in enumerate(arr, 1):
            if not isinstance(rec, dict):
                yield (
                    i,
                    "record",
                    DataError(
                        f"expected a JSON object, got {type(rec).__name__}",
                        path=path,
                        line=i,
                        where="record",
                    ),
                )
            else:
                yield i, "record", rec


def _iter_jsonl(path: Path, f: Any) -> Iterator[tuple[int, str, dict[str, Any] | DataError]]:
    """JSON Lines, streamed; line numbers count newline-terminated lines from 1."""
    for lineno, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            yield (
                lineno,
                "line",
                DataError(
                    f"malformed JSON: {e.msg} at column {e.colno} (expected one JSON object per line)",
                    path=path,
                    line=lineno,
                ),
            )
            continue
        if not isinstance(rec, dict):
            yield (
                lineno,
                "line",
                DataError(
                    f"expected a JSON object, got {type(rec).__name__}", path=path, line=lineno
                ),
            )
            continue
        yield lineno, "line", rec


def rec_id(rec: dict[str, Any]) -> str | None:
    """The record's ``id`` (or ``ID``) as a string, None when it has neither."""
    for k in ("id", "ID"):
        if rec.get(k) is not None:
            return str(rec[k])
    return None


def data_files(path: Path) -> list[Path]:
    """The files behind ``path``: itself, or every shard under a folder (name order)."""
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(
            (f for f in path.rglob("*") if f.is_file() and f.suffix in SHARD_SUFFIXES),
            key=lambda f: f.relative_to(path).as_posix(),
        )
        if not files:
            raise DataError(
                f"a folder without data shards (expected files ending in {', '.join(SHARD_SUFFIXES)})",
                path=path,
            )
        return files
    raise DataError(
        "file not found (expected a JSONL, JSON or parquet file, a folder of them, or a Hub"
        " dataset id owner/name[:split])",
        path=path,
    )


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(?::[\w.-]+)?$")


def looks_like_hub_id(path: Path) -> bool:
    """``owner/name[:split]`` that is no local path: nothing there, no data-file suffix, and its
    first part is not a local folder (so a mistyped local file is reported, not downloaded)."""
    text = str(path)
    return (
        not path.exists()
        and bool(_HUB_ID.match(text))
        and not text.split(":")[0].endswith(SHARD_SUFFIXES)
        and not Path(text.split("/")[0]).exists()
    )


def hub_records(name: str) -> Iterator[tuple[int, str, dict[str, Any] | DataError]]:
    """Rows of a Hugging Face dataset ``owner/name[:split]`` (default split ``test``), with image
    columns left undecoded (``{"bytes", "path"}`` structs). Needs the network or the Hub cache."""
    from datasets import Image as HFImage
    from datasets import load_dataset

    repo, _, split = name.partition(":")
    try:
        ds = load_dataset(repo, split=split or "test")
    except Exception as e:  # noqa: BLE001 - offline, unknown id, no such split: one line
        raise DataError(
            f"no local file or folder of that name, and reading it as a Hub dataset id failed:"
            f" {type(e).__name__}: {' '.join(str(e).split())[:300]}",
            path=name,
        ) from e
    for col, feature in ds.features.items():
        if isinstance(feature, HFImage):
            ds = ds.cast_column(col, HFImage(decode=False))
    for i, rec in enumerate(ds, 1):
        yield i, "row", rec
