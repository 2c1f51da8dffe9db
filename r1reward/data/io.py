"""Readers and writers: every preference format r1reward meets, behind one :func:`load`.

Formats (detected from the fields when ``format=None``):

``r1-reward-rl``
    The R1-Reward-RL training set (paper §4.1; Hugging Face ``yifanzhang114/R1-Reward-RL``):
    ``message`` = JSON string of chat messages whose user turn holds the Table-1 prompt text and an
    ``{"type": "image", "image": PATH}`` item; ``question``; ``answer`` = ``["<answer>2</answer>"]``.
    The question and the two responses are parsed back out of the Table-1 prompt (either layout of
    :data:`r1reward.prompt.PROMPT_STYLES`); the file's response order is kept (its label already
    says which position is better). An ``image`` column (bytes, base64, a Hub struct or a path)
    wins over the path inside ``message``, which points at the authors' cluster; such foreign
    absolute paths are found under ``image_root`` by their tail (:mod:`r1reward.data.media`).
``vl-rewardbench``
    R1-Reward's re-export: ``id, prompt, chosen, rejected, image`` (+ ``*_reason``). Category by
    the benchmark's official split, case-insensitive id prefixes: hallucination
    (``hallucination``, ``RLAIF``, ``RLHF``), reasoning (``mathverse``, ``mmmu``), general
    (everything else). Its image names (``vl_reward/img/image_<k>.jpg``) belong to the authors'
    export and match no public download: evaluate on ``vl-rewardbench-hub``, which carries the
    images, or point ``image_root`` at a folder holding that layout.
``vl-rewardbench-hub``
    The Hub release ``MMInstruction/VL-RewardBench`` (parquet): ``id, query, response`` (a list of
    two), ``human_ranking`` (a rank per response, 0 = preferred: ``[0, 1]`` means the first is
    better), ``image`` (a struct with ``bytes``/``path``), ``models, judge, rationale,
    query_source, ground_truth`` (kept in ``meta``). Category as for ``vl-rewardbench``.
``vl-rewardbench-github``
    The benchmark's GitHub ``data/data.jsonl``: the same fields with ``image_path``
    (``images/<dataset>/<file>``) instead of ``image``. Category from the dataset folder as the
    benchmark's ``cal.py`` maps it (vlfeedback, wildvision-battle: general; povid, rlhf-v,
    rlaif-v: hallucination; reasoning_tasks: reasoning), else from the id prefix.
``mm-rlhf-rewardbench``
    ``id, prompt, chosen, rejected`` and ``image`` or ``video``, relative or absolute paths;
    category = the first of mcq / long / short / safety / video that occurs in the media path, the
    rule of the benchmark's scoring script (so absolute paths keep their category). Several pairs
    share an ``id`` (the acc+ group, kept in ``meta["group"]``); pair ids are made unique as
    ``id#k``.
``multimodal-rewardbench``
    Meta's release (``data/all_data.json``, a JSON array; JSONL also read): ``ID, Text, Image,
    Output1, Output2, Better`` (``"Output1"``/``"Output2"``) and ``Category`` (top level or under
    ``Meta``). As in the benchmark's scoring script, ``safety`` splits into ``safety/bias``
    (ID prefix ``pairs``) and ``safety/toxicity``, ``reasoning`` into ``reasoning/math`` (``math``)
    and ``reasoning/coding``. The file's Output1/Output2 order is kept.
``pairs``
    Our own JSONL, one :meth:`PreferencePair.to_dict` per line (:func:`write_pairs`).

Images may be paths, raw bytes, base64 of any image type, ``data:`` URLs or Hub image structs;
:mod:`r1reward.data.media` tells them apart by decoding. ``path`` may also be a folder of shards
(``*.parquet``, ``*.jsonl``, ``*.json``, searched recursively, read in name order as one dataset),
or, when no such file or folder exists, a Hugging Face dataset id read through ``datasets``
(``owner/name`` or ``owner/name:split``, needs the network).

Where a file lists the preferred response as ``chosen``, the reader places it as Response 1 or 2
by a hash of the pair id (``order="hashed"``, about half each), so no later stage can fall into
the reference code's "chosen is always Response 1" trap; ``order="chosen-first"`` reproduces the
reference layout for comparison.

Bad records raise :class:`DataError` naming file, line, id and what was expected; with
``on_error="skip"`` they are skipped, counted in ``result.skipped`` and logged — never dropped
silently.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from r1reward.data.media import MediaError, image_refs
from r1reward.data.schema import DataError, PreferencePair, check_media

log = logging.getLogger("r1reward.data")

FORMATS: tuple[str, ...] = (
    "r1-reward-rl",
    "vl-rewardbench",
    "vl-rewardbench-hub",
    "vl-rewardbench-github",
    "mm-rlhf-rewardbench",
    "multimodal-rewardbench",
    "pairs",
)
VL_HALLUCINATION_PREFIXES = ("hallucination", "rlaif", "rlhf")
VL_REASONING_PREFIXES = ("mathverse", "mmmu")
VL_GENERAL_PREFIXES = ("wildvision", "jailbreak", "lrvinstruction", "politics", "svit")
MM_RLHF_CATEGORIES = ("mcq", "long", "short", "safety", "video")
#: VL-RewardBench's cal.py: dataset folder of ``image_path`` -> category.
VL_DATASET_GROUPS = {
    "vlfeedback": "general",
    "wildvision-battle": "general",
    "povid": "hallucination",
    "rlhf-v": "hallucination",
    "rlaif-v": "hallucination",
    "reasoning_tasks": "reasoning",
}
SHARD_SUFFIXES = (".parquet", ".jsonl", ".json")


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


class _Bad(Exception):
    """A record-level problem; :func:`load` adds file, line and id."""


# ----------------------------------------------------------------------------------------------
# raw records


def _iter_records(path: Path) -> Iterator[tuple[int, str, dict[str, Any] | DataError]]:
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


def _rec_id(rec: dict[str, Any]) -> str | None:
    for k in ("id", "ID"):
        if rec.get(k) is not None:
            return str(rec[k])
    return None


def detect_format(path: str | Path, *, _records: Iterable[Any] | None = None) -> str:
    """Guess the format of ``path`` from the fields of its first records (see module docstring).

    A folder of shards is told by its first shard.
    """
    path = Path(path)
    if path.is_dir():
        path = _data_files(path)[0]
    keys: set[str] = set()
    recs: list[dict[str, Any]] = []
    bad: DataError | None = None
    for _, _, rec in _iter_records(path) if _records is None else _records:
        if isinstance(rec, dict):
            recs.append(rec)
            keys |= set(rec)
        elif bad is None:
            bad = rec
        if len(recs) >= 20:
            break
    if not recs:
        if bad is not None:
            raise bad
        raise DataError(
            "no records (an empty file; expected JSON records or parquet rows)", path=path
        )
    if {"message", "answer"} <= keys:
        return "r1-reward-rl"
    if {"query", "response", "human_ranking"} <= keys:
        return "vl-rewardbench-github" if "image_path" in keys else "vl-rewardbench-hub"
    if {"Output1", "Output2", "Better"} <= keys:
        return "multimodal-rewardbench"
    if {"response_1", "response_2", "preferred"} <= keys:
        return "pairs"
    if {"chosen", "rejected"} <= keys:
        media = [r.get("image") or r.get("video") for r in recs]
        folders = {part for m in media if isinstance(m, str) for part in Path(m).parts[:-1]}
        if "video" in keys or folders & set(MM_RLHF_CATEGORIES):
            return "mm-rlhf-rewardbench"
        ids = [str(_rec_id(r) or "").lower() for r in recs]
        vl = VL_HALLUCINATION_PREFIXES + VL_REASONING_PREFIXES + VL_GENERAL_PREFIXES
        if any(i.startswith(vl) for i in ids):
            return "vl-rewardbench"
        name = path.name.lower()
        if "mm_rlhf" in name or "mm_reward" in name or "mm-rlhf" in name:
            return "mm-rlhf-rewardbench"
        if "vl_reward" in name or "vl-reward" in name:
            return "vl-rewardbench"
    raise DataError(
        f"cannot tell the format from the fields {sorted(keys)}; pass format= one of {FORMATS}",
        path=path,
    )


# ----------------------------------------------------------------------------------------------
# per-format record readers: (record, context) -> PreferencePair, raising _Bad


def _need(
    rec: dict[str, Any], fields: Iterable[str], fmt: str, *, text: Iterable[str] = ()
) -> None:
    """Raise _Bad unless every field is present (not null) and the ``text`` ones are strings."""
    fields = list(fields)
    missing = [f for f in fields if rec.get(f) is None]
    if missing:
        raise _Bad(f"missing field(s) {missing}; a {fmt} record needs {fields}")
    for f in text:
        if not isinstance(rec[f], str):
            raise _Bad(f"field {f!r} must be a string, got {type(rec[f]).__name__}")


def _place(pid: str, chosen: str, rejected: str, order: str) -> tuple[str, str, int]:
    """(response_1, response_2, preferred): chosen goes where the hash of the id says."""
    if order == "chosen-first":
        return chosen, rejected, 1
    if hashlib.sha256(pid.encode()).digest()[0] & 1:
        return rejected, chosen, 2
    return chosen, rejected, 1


def _images(value: Any, ctx: dict[str, Any]) -> list[Any]:
    """Image references decided by decoding (:func:`r1reward.data.media.image_refs`)."""
    try:
        return image_refs(value, base=ctx["base"], image_root=ctx["image_root"])
    except MediaError as e:
        raise _Bad(f"bad image: {e}") from None


def mm_rlhf_category(path: str) -> str:
    """MM-RLHF-RewardBench's category of a media path (mcq / long / short / safety / video).

    The folder nearest the file that is named exactly like a category; failing that, the first
    category that occurs anywhere in the path (the substring rule of the benchmark's scoring
    script). The two agree on every published relative path; the folder rule keeps an absolute
    path such as ``/data/longterm/short/x.png`` in ``short``, where the substring rule would say
    ``long``. ``""`` when neither finds one.
    """
    for part in reversed(Path(path).parts[:-1]):
        if part in MM_RLHF_CATEGORIES:
            return part
    return next((c for c in MM_RLHF_CATEGORIES if c in path), "")


def _vl_category(pid: str) -> str:
    low = pid.lower()
    if low.startswith(VL_HALLUCINATION_PREFIXES):
        return "hallucination"
    if low.startswith(VL_REASONING_PREFIXES):
        return "reasoning"
    return "general"


def _read_vl(rec: dict[str, Any], ctx: dict[str, Any]) -> PreferencePair:
    _need(
        rec,
        ("id", "prompt", "chosen", "rejected", "image"),
        "vl-rewardbench",
        text=("prompt", "chosen", "rejected"),
    )
    pid = str(rec["id"])
    r1, r2, pref = _place(pid, rec["chosen"], rec["rejected"], ctx["order"])
    meta = {k: rec[k] for k in ("chosen_reason", "rejected_reason") if k in rec}
    return PreferencePair(
        id=pid,
        question=rec["prompt"],
        images=_images(rec["image"], ctx),
        response_1=r1,
        response_2=r2,
        preferred=pref,
        category=_vl_category(pid),
        source="vl-rewardbench",
        meta=meta,
    )


def _read_vl_release(rec: dict[str, Any], ctx: dict[str, Any]) -> PreferencePair:
    """VL-RewardBench as its owners publish it (Hub parquet, GitHub jsonl): responses + ranking."""
    fmt = ctx["format"]
    image_field = "image_path" if fmt == "vl-rewardbench-github" else "image"
    _need(rec, ("id", "query", "response", "human_ranking", image_field), fmt, text=("query",))
    responses, ranking = rec["response"], rec["human_ranking"]
    if (
        not isinstance(responses, list | tuple)
        or len(responses) != 2
        or not all(isinstance(r, str) for r in responses)
    ):
        raise _Bad(f"field 'response' must be a list of two strings, got {responses!r:.80}")
    if not isinstance(ranking, list | tuple) or sorted(ranking) != [0, 1]:
        raise _Bad(
            f"field 'human_ranking' is {ranking!r}; expected [0, 1] (first preferred) or [1, 0]"
        )
    pid = str(rec["id"])
    chosen, rejected = (
        (responses[0], responses[1]) if ranking[0] == 0 else (responses[1], responses[0])
    )
    r1, r2, pref = _place(pid, chosen, rejected, ctx["order"])
    category = _vl_category(pid)
    image_path = rec.get("image_path")
    if isinstance(image_path, str) and len(Path(image_path).parts) > 2:
        category = VL_DATASET_GROUPS.get(Path(image_path).parts[-2].lower(), category)
    keep = ("models", "judge", "rationale", "query_source", "ground_truth", "human_error_analysis")
    meta = {k: rec[k] for k in keep if rec.get(k) is not None}
    return PreferencePair(
        id=pid,
        question=rec["query"],
        images=_images(rec[image_field], ctx),
        response_1=r1,
        response_2=r2,
        preferred=pref,
        category=category,
        source=fmt,
        meta=meta,
    )


def _read_mm_rlhf(rec: dict[str, Any], ctx: dict[str, Any]) -> PreferencePair:
    _need(
        rec,
        ("id", "prompt", "chosen", "rejected"),
        "mm-rlhf-rewardbench",
        text=("prompt", "chosen", "rejected"),
    )
    media = rec.get("image") or rec.get("video")
    if not media:
        raise _Bad("missing field 'image' or 'video'; an mm-rlhf-rewardbench record needs one")
    group = str(rec["id"])
    k = ctx["group_counts"].get(group, 0)
    ctx["group_counts"][group] = k + 1
    pid = f"{group}#{k}"
    r1, r2, pref = _place(pid, rec["chosen"], rec["rejected"], ctx["order"])
    is_video = not rec.get("image")
    meta = {k2: rec[k2] for k2 in ("chosen_reason", "rejected_reason") if k2 in rec}
    meta["group"] = group
    return PreferencePair(
        id=pid,
        question=rec["prompt"],
        images=[] if is_video else _images(media, ctx),
        videos=[str(v) for v in _images(media, ctx)] if is_video else [],
        response_1=r1,
        response_2=r2,
        preferred=pref,
        category=mm_rlhf_category(media if isinstance(media, str) else str(media[0])),
        source="mm-rlhf-rewardbench",
        meta=meta,
    )


def _read_mmrb(rec: dict[str, Any], ctx: dict[str, Any]) -> PreferencePair:
    _need(
        rec,
        ("ID", "Text", "Output1", "Output2", "Better", "Image"),
        "multimodal-rewardbench",
        text=("Text", "Output1", "Output2"),
    )
    better = rec["Better"]
    if better not in ("Output1", "Output2"):
        raise _Bad(
            f"label 'Better' is {better!r}; expected 'Output1' or 'Output2' (label in {{1,2}})"
        )
    pid = str(rec["ID"])
    cat = rec.get("Category")
    if cat is None and isinstance(rec.get("Meta"), dict):
        cat = rec["Meta"].get("Category")
    cat = str(cat or "")
    if cat == "safety":
        cat = "safety/bias" if pid.lower().startswith("pairs") else "safety/toxicity"
    elif cat == "reasoning":
        cat = "reasoning/math" if pid.lower().startswith("math") else "reasoning/coding"
    return PreferencePair(
        id=pid,
        question=rec["Text"],
        images=_images(rec["Image"], ctx),
        response_1=rec["Output1"],
        response_2=rec["Output2"],
        preferred=1 if better == "Output1" else 2,
        category=cat,
        source="multimodal-rewardbench",
    )


_TABLE1 = re.compile(
    r"\[Question\]:\s*\n?(?P<q>.*?)\s*#+\s*\[Response 1\]:\s*\n?(?P<r1>.*?)\s*#+\s*\[Response 2\]:"
    r"\s*\n?(?P<r2>.*?)\s*(?:#+\s*\*\*Output Format|\Z)",
    re.S,
)
_ANSWER = re.compile(r"^\s*(?:<answer>\s*(?P<a>[^<]*?)\s*</answer>|(?P<b>\S+))\s*$", re.S)


def parse_table1(text: str) -> tuple[str, str, str] | None:
    """(question, response_1, response_2) parsed from a Table-1 prompt text, or None."""
    m = _TABLE1.search(text)
    if not m:
        return None
    return m.group("q").strip(), m.group("r1").strip(), m.group("r2").strip()


def _read_r1rl(rec: dict[str, Any], ctx: dict[str, Any]) -> PreferencePair:
    _need(rec, ("message", "answer"), "r1-reward-rl")
    ans = rec["answer"]
    ans = ans[0] if isinstance(ans, list) and len(ans) == 1 else ans
    m = _ANSWER.match(ans) if isinstance(ans, str) else None
    label = (m.group("a") or m.group("b")) if m else None
    if label not in ("1", "2"):
        raise _Bad(
            f"answer is {rec['answer']!r}; expected ['<answer>1</answer>'] or ['<answer>2</answer>'] (label in {{1,2}})"
        )
    msgs = rec["message"]
    if isinstance(msgs, str):
        try:
            msgs = json.loads(msgs)
        except json.JSONDecodeError as e:
            raise _Bad(
                f"field 'message' is not valid JSON ({e.msg}); expected a JSON list of chat messages"
            ) from e
    if isinstance(msgs, dict):
        msgs = [msgs]
    if not isinstance(msgs, list):
        raise _Bad("field 'message' must be a list of chat messages")
    texts: list[str] = []
    images: list[Any] = []
    videos: list[Any] = []
    for msg in msgs:
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, str):
            texts.append(content)
            continue
        for item in content or []:
            if not isinstance(item, dict):
                continue
            kind = item.get("type")
            if kind == "text":
                texts.append(str(item.get("text", "")))
            elif kind in ("image", "image_url"):
                images.append(item.get("image") or item.get("image_url"))
            elif kind == "video":
                videos.append(item.get("video"))
    parsed = next((p for p in map(parse_table1, texts) if p), None)
    if parsed is None:
        raise _Bad(
            "message text does not hold the Table-1 prompt layout "
            "(expected '[Question]:', '[Response 1]:' and '[Response 2]:' sections)"
        )
    q, r1, r2 = parsed
    column = rec.get("image")
    if column is not None and not (isinstance(column, str | list | tuple) and len(column) == 0):
        # the image column holds the image itself (or a path); the message's path points at
        # the authors' cluster, so the column wins
        images = [column]
    pid = _rec_id(rec) or f"{ctx['path'].stem}-{ctx['line']}"
    return PreferencePair(
        id=pid,
        question=str(rec.get("question") or q),
        images=[x for im in images for x in _images(im, ctx)],
        videos=[str(x) for v in videos for x in _images(v, ctx)],
        response_1=r1,
        response_2=r2,
        preferred=int(label),
        category=str(rec.get("category", "") or ""),
        source="r1-reward-rl",
    )


def _read_pairs(rec: dict[str, Any], ctx: dict[str, Any]) -> PreferencePair:
    _need(
        rec,
        ("id", "question", "response_1", "response_2", "preferred"),
        "pairs",
        text=("question", "response_1", "response_2"),
    )
    if rec["preferred"] not in (1, 2) or isinstance(rec["preferred"], bool):
        raise _Bad(f"label 'preferred' is {rec['preferred']!r}; expected 1 or 2")
    for f in ("images", "videos"):
        if not isinstance(rec.get(f, []) or [], list):
            raise _Bad(f"field {f!r} must be a list of paths")
    return PreferencePair.from_dict(rec, base=ctx["base"])


_READERS = {
    "r1-reward-rl": _read_r1rl,
    "vl-rewardbench": _read_vl,
    "vl-rewardbench-hub": _read_vl_release,
    "vl-rewardbench-github": _read_vl_release,
    "mm-rlhf-rewardbench": _read_mm_rlhf,
    "multimodal-rewardbench": _read_mmrb,
    "pairs": _read_pairs,
}


# ----------------------------------------------------------------------------------------------
# the entry point


def _data_files(path: Path) -> list[Path]:
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


def _looks_like_hub_id(path: Path) -> bool:
    """``owner/name[:split]`` that is no local path: nothing there, no data-file suffix, and its
    first part is not a local folder (so a mistyped local file is reported, not downloaded)."""
    text = str(path)
    return (
        not path.exists()
        and bool(_HUB_ID.match(text))
        and not text.split(":")[0].endswith(SHARD_SUFFIXES)
        and not Path(text.split("/")[0]).exists()
    )


def _hub_records(name: str) -> Iterator[tuple[int, str, dict[str, Any] | DataError]]:
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
    if format is not None and format not in _READERS:
        raise ValueError(f"unknown format {format!r}; expected one of {FORMATS}")
    hub = _looks_like_hub_id(path)
    files = [path] if hub else _data_files(path)
    fmt = format or detect_format(files[0], _records=_hub_records(str(path)) if hub else None)
    reader = _READERS[fmt]
    root = None if image_root is None else Path(image_root)
    ctx: dict[str, Any] = {"order": order, "group_counts": {}, "image_root": root, "format": fmt}
    out = PairList(path=str(path), format=fmt)
    seen: dict[str, int] = {}
    renamed = 0
    for file, number, where, rec in (
        (f, *r) for f in files for r in (_hub_records(str(f)) if hub else _iter_records(f))
    ):
        ctx["path"] = file
        ctx["base"] = root if root is not None else (Path.cwd() if hub else file.parent)
        rid = None
        try:
            if isinstance(rec, DataError):
                raise rec
            rid = _rec_id(rec) or (f"{file.stem}-{number}" if fmt == "r1-reward-rl" else None)
            ctx["line"] = number
            try:
                pair = reader(rec, ctx)
            except _Bad as e:
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
