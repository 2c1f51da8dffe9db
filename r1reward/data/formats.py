"""The preference formats r1reward reads: detection and one record reader per format.

:func:`r1reward.data.io.load` puts them behind one call; :data:`READERS` maps a format to its
``(record, context) -> PreferencePair`` reader.

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
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from r1reward.data.media import MediaError, image_refs
from r1reward.data.records import data_files, iter_records, rec_id
from r1reward.data.schema import DataError, PreferencePair

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


class RecordError(Exception):
    """A record-level problem; :func:`r1reward.data.io.load` adds file, line and id."""


def detect_format(path: str | Path, *, _records: Iterable[Any] | None = None) -> str:
    """Guess the format of ``path`` from the fields of its first records (see module docstring).

    A folder of shards is told by its first shard.
    """
    path = Path(path)
    if path.is_dir():
        path = data_files(path)[0]
    keys: set[str] = set()
    recs: list[dict[str, Any]] = []
    bad: DataError | None = None
    for _, _, rec in iter_records(path) if _records is None else _records:
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
        ids = [str(rec_id(r) or "").lower() for r in recs]
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
# per-format record readers: (record, context) -> PreferencePair, raising RecordError


def _need(
    rec: dict[str, Any], fields: Iterable[str], fmt: str, *, text: Iterable[str] = ()
) -> None:
    """Raise RecordError unless every field is present (not null) and the ``text`` ones are strings."""
    fields = list(fields)
    missing = [f for f in fields if rec.get(f) is None]
    if missing:
        raise RecordError(f"missing field(s) {missing}; a {fmt} record needs {fields}")
    for f in text:
        if not isinstance(rec[f], str):
            raise RecordError(f"field {f!r} must be a string, got {type(rec[f]).__name__}")


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
        raise RecordError(f"bad image: {e}") from None


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
        raise RecordError(f"field 'response' must be a list of two strings, got {responses!r:.80}")
    if not isinstance(ranking, list | tuple) or sorted(ranking) != [0, 1]:
        raise RecordError(
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
        raise RecordError(
            "missing field 'image' or 'video'; an mm-rlhf-rewardbench record needs one"
        )
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
        raise RecordError(
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
        raise RecordError(
            f"answer is {rec['answer']!r}; expected ['<answer>1</answer>'] or ['<answer>2</answer>'] (label in {{1,2}})"
        )
    msgs = rec["message"]
    if isinstance(msgs, str):
        try:
            msgs = json.loads(msgs)
        except json.JSONDecodeError as e:
            raise RecordError(
                f"field 'message' is not valid JSON ({e.msg}); expected a JSON list of chat messages"
            ) from e
    if isinstance(msgs, dict):
        msgs = [msgs]
    if not isinstance(msgs, list):
        raise RecordError("field 'message' must be a list of chat messages")
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
        raise RecordError(
            "message text does not hold the Table-1 prompt layout "
            "(expected '[Question]:', '[Response 1]:' and '[Response 2]:' sections)"
        )
    q, r1, r2 = parsed
    column = rec.get("image")
    if column is not None and not (isinstance(column, str | list | tuple) and len(column) == 0):
        # the image column holds the image itself (or a path); the message's path points at
        # the authors' cluster, so the column wins
        images = [column]
    pid = rec_id(rec) or f"{ctx['path'].stem}-{ctx['line']}"
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
        raise RecordError(f"label 'preferred' is {rec['preferred']!r}; expected 1 or 2")
    for f in ("images", "videos"):
        if not isinstance(rec.get(f, []) or [], list):
            raise RecordError(f"field {f!r} must be a list of paths")
    return PreferencePair.from_dict(rec, base=ctx["base"])


#: format -> its record reader (raises :class:`RecordError`).
READERS = {
    "r1-reward-rl": _read_r1rl,
    "vl-rewardbench": _read_vl,
    "vl-rewardbench-hub": _read_vl_release,
    "vl-rewardbench-github": _read_vl_release,
    "mm-rlhf-rewardbench": _read_mm_rlhf,
    "multimodal-rewardbench": _read_mmrb,
    "pairs": _read_pairs,
}
