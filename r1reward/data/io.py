"""Read and write preference files: :func:`load` (every format of :mod:`r1reward.data.formats`,
from a file, a folder of shards or a Hub id), :func:`write_pairs` and :func:`to_dataset`.

Bad records raise :class:`DataError` naming file, line, id and what was expected; with
``on_error="skip"`` they are skipped, counted in ``result.skipped`` and logged — never dropped
silently.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from r1reward.data.formats import FORMATS, READERS, RecordError, detect_format
from r1reward.data.records import data_files, hub_records, iter_records, looks_like_hub_id, rec_id
from r1reward.data.schema import DataError, PreferencePair, check_media

__all__ = ["FORMATS", "PairList", "detect_format", "load", "to_dataset", "write_pairs"]

log = logging.getLogger("r1reward.data")


class PairList(list):
    """A ``list[PreferencePair]`` that also says where it came from and what was skipped.

    Attributes:
        path: the file read.
        format: the format used.
        skipped: ``(line, id, reason)`` for every record skipped under ``on_error="skip"``.
    """

    def __init__(
        self,
        items: Iterable[PreferencePair] = (),
        *,
        path: str | None = None,
        format: str | None = None,
        skipped: list[tuple[int | None, str | None, str]] | None = None,
    ) -> None:
        super().__init__(items)
        self.path = path
        self.format = format
        self.skipped: list[tuple[int | None, str | None, str]] = list(skipped or [])


def load(
    path: str | Path,
    format: str | None = None,
    *,
    image_root: str | Path | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    order: Literal["hashed", "chosen-first"] = "hashed",
    check_images: bool = False,
) -> PairList:
    """Read a preference file into :class:`PreferencePair` records.

    Args:
        path: JSONL (one record per line), a JSON array file, parquet, a folder of such shards
            (read in name order as one dataset), or a Hub dataset id ``owner/name[:split]``
            when no such local path exists (read through ``datasets``; needs the network).
        format: one of :data:`FORMATS`; detected from the fields when None or ``"auto"``.
        image_root: folder that relative image/video paths are resolved against (default: the
            data file's folder); paths that do not exist (another machine's absolute paths) are
            looked for under it by their tail (:func:`r1reward.data.media.remap_by_tail`).
            Images stay lazy paths or ``data:`` URLs; :func:`open_images` opens them.
        on_error: ``"raise"`` stops at the first bad record with a :class:`DataError`;
            ``"skip"`` skips bad records, logs a warning with their count and first reasons and
            lists them in ``result.skipped`` as ``(line, id, reason)``.
        order: for chosen/rejected files, ``"hashed"`` puts the chosen response first or second
            by a hash of the pair id; ``"chosen-first"`` reproduces the reference layout.
        check_images: also check now that every image/video path exists.

    Returns:
        a :class:`PairList` (a list of pairs with ``.path``, ``.format``, ``.skipped``).
    """
    path = Path(path)
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if order not in ("hashed", "chosen-first"):
        raise ValueError(f"order must be 'hashed' or 'chosen-first', got {order!r}")
    if format == "auto":  # the value of the commands' --format that means "detect"
        format = None
    if format is not None and format not in READERS:
        raise ValueError(f"unknown format {format!r}; expected one of {FORMATS}")
    hub = looks_like_hub_id(path)
    files = [path] if hub else data_files(path)
    fmt = format or detect_format(files[0], _records=hub_records(str(path)) if hub else None)
    reader = READERS[fmt]
    root = None if image_root is None else Path(image_root)
    ctx: dict[str, Any] = {"order": order, "group_counts": {}, "image_root": root, "format": fmt}
    out = PairList(path=str(path), format=fmt)
    seen: dict[str, int] = {}
    renamed = 0
    for file, number, where, rec in (
        (f, *r) for f in files for r in (hub_records(str(f)) if hub else iter_records(f))
    ):
        ctx["path"] = file
        ctx["base"] = root if root is not None else (Path.cwd() if hub else file.parent)
        rid = None
        try:
            if isinstance(rec, DataError):
                raise rec
            rid = rec_id(rec) or (f"{file.stem}-{number}" if fmt == "r1-reward-rl" else None)
            ctx["line"] = number
            try:
                pair = reader(rec, ctx)
            except RecordError as e:
                raise DataError(
                    f"{e} [{fmt}]", path=file, line=number, record_id=rid, where=where
                ) from None
            rid = pair.id
            if pair.id in seen:
                if fmt == "pairs":
                    raise DataError(
                        f"duplicate id (first seen at {where} {seen[pair.id]}); expected unique ids",
                        path=file,
                        line=number,
                        record_id=rid,
                        where=where,
                    )
                # benchmarks reuse ids for different pairs (VL-RewardBench: 25 ids twice):
                # keep both, the later one as id#k, the original in meta["orig_id"]
                k = 1
                while f"{pair.id}#{k}" in seen:
                    k += 1
                pair.meta["orig_id"] = pair.id
                pair.id = rid = f"{pair.id}#{k}"
                renamed += 1
            seen[pair.id] = number
            pair.meta.update(source_file=str(file), source_line=number, source_where=where)
            if check_images:
                check_media(pair)
        except DataError as e:
            if on_error == "raise":
                raise
            out.skipped.append((number, rid, e.reason))
            continue
        out.append(pair)
    if renamed:
        log.info(
            "%s: %d repeated id(s) renamed to id#k (original in meta['orig_id'])", path, renamed
        )
    if out.skipped:
        first = "; ".join(f"{where} {n} (id {i!r}): {r}" for n, i, r in out.skipped[:3])
        log.warning(
            "%s: skipped %d bad record(s) of %d; first: %s",
            path,
            len(out.skipped),
            len(out.skipped) + len(out),
            first,
        )
    return out


# ----------------------------------------------------------------------------------------------
# writers


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:120]


def write_pairs(pairs: Iterable[PreferencePair], path: str | Path) -> Path:
    """Write ``pairs`` as a ``pairs`` JSONL; in-memory PIL images go to ``<stem>_images/*.png``
    (named ``<index>_<id>_<k>.png``, so ids that differ only in odd characters cannot collide).

    Image paths in the file are relative to the JSONL's folder when they live under it.
    Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img_dir = path.parent / f"{path.stem}_images"
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for i, pair in enumerate(pairs):
            paths = []
            for k, im in enumerate(pair.images):
                if isinstance(im, Image.Image):
                    img_dir.mkdir(exist_ok=True)
                    target = img_dir / f"{i:06d}_{_safe(pair.id)}_{k}.png"
                    im.save(target, format="PNG")
                    paths.append(str(target.relative_to(path.parent)))
                else:
                    paths.append(_rel(str(im), path.parent))
            d = pair.to_dict(image_paths=paths)
            d["videos"] = [_rel(v, path.parent) for v in d["videos"]]
            d["meta"] = {k: v for k, v in d["meta"].items() if not k.startswith("source_")}
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def _rel(p: str, folder: Path) -> str:
    if p.startswith("data:"):
        return p
    try:
        return str(Path(p).resolve().relative_to(folder.resolve()))
    except ValueError:
        return str(Path(p).resolve())


def to_dataset(pairs: Iterable[PreferencePair]):
    """A :class:`datasets.Dataset` with one row per pair.

    Columns: id, question, images, videos, response_1, response_2, preferred, category,
    difficulty, source, meta (JSON string). ``images`` uses the ``datasets.Image`` feature when
    the pairs hold PIL images (the toy world) and plain path strings otherwise (lazy benchmarks
    whose images may live elsewhere).
    """
    from datasets import Dataset, Features, List, Value
    from datasets import Image as HFImage

    pairs = list(pairs)
    in_memory = any(isinstance(im, Image.Image) for p in pairs for im in p.images)
    rows = [
        {
            "id": p.id,
            "question": p.question,
            "images": list(p.images) if in_memory else [str(im) for im in p.images],
            "videos": [str(v) for v in p.videos],
            "response_1": p.response_1,
            "response_2": p.response_2,
            "preferred": p.preferred,
            "category": p.category,
            "difficulty": p.difficulty,
            "source": p.source,
            "meta": json.dumps(p.meta, ensure_ascii=False, default=str),
        }
        for p in pairs
    ]
    features = Features(
        {
            "id": Value("string"),
            "question": Value("string"),
            "images": List(HFImage() if in_memory else Value("string")),
            "videos": List(Value("string")),
            "response_1": Value("string"),
            "response_2": Value("string"),
            "preferred": Value("int8"),
            "category": Value("string"),
            "difficulty": Value("int64"),
            "source": Value("string"),
            "meta": Value("string"),
        }
    )
    return Dataset.from_list(rows, features=features)
