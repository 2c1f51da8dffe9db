"""The one record every stage of r1reward reads: a :class:`PreferencePair`.

A generative reward model (paper §3, Table 1) sees an image (or video), a question and two
responses, and must say which response is better. Every reader in :mod:`r1reward.data` turns its
source format into this record, so trainers, the evaluator and the service never look at the
original field names.

Images are either PIL images (the toy world keeps them in memory) or *lazy* paths (strings): the
readers resolve relative paths but do not open the files; :func:`open_images` does, and raises a
:class:`DataError` naming the file, line and record id when one is missing.
"""

from __future__ import annotations

import base64
import io
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image

from r1reward.data import sources


class DataError(ValueError):
    """Bad input data: the message names the file, the line (or record), the id and what was expected."""

    def __init__(
        self,
        reason: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        record_id: str | None = None,
        where: str = "line",
    ) -> None:
        self.reason = reason
        self.path = None if path is None else str(path)
        self.line = line
        self.record_id = record_id
        loc = self.path or "<data>"
        if line is not None:
            loc += f", {where} {line}"
        if record_id is not None:
            loc += f", id {record_id!r}"
        super().__init__(f"{loc}: {reason}")


@dataclass
class PreferencePair:
    """One comparison: which of two responses to a (multimodal) question is better.

    Attributes:
        id: unique within its source (benchmarks with repeated ids get ``id#k``).
        question: the user's question / instruction.
        images: PIL images or image paths (str), in prompt order.
        videos: video paths (a file or a folder of frames), in prompt order.
        response_1, response_2: the two candidate answers, in the order the judge will see them.
        preferred: 1 or 2, the index of the better response (the label of paper §3.1). It has
            no default value that could pass silently: leaving it out raises DataError.
        category: benchmark category (e.g. ``hallucination``), or the toy world's category.
        difficulty: optional integer difficulty (toy: visual difficulty 1..3; curation: tries).
        source: where the pair came from (format name or ``toy``).
        meta: free extra fields (group id for acc+, reasons, the toy's ground truth, ...).
    """

    id: str
    question: str
    images: list[Any] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)
    response_1: str = ""
    response_2: str = ""
    preferred: int = None  # type: ignore[assignment]  # required: 1 or 2 (checked below)
    category: str = ""
    difficulty: int | None = None
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.preferred not in (1, 2):
            raise DataError(f"preferred must be 1 or 2, got {self.preferred!r}", record_id=self.id)

    @property
    def chosen(self) -> str:
        """The better response's text."""
        return self.response_1 if self.preferred == 1 else self.response_2

    @property
    def rejected(self) -> str:
        """The worse response's text."""
        return self.response_2 if self.preferred == 1 else self.response_1

    def swap(self) -> PreferencePair:
        """Return a copy with the two responses exchanged and the label flipped.

        ``meta["swapped"]`` is toggled. A pair of a generated source is then given to its
        ``on_swap`` hook (:func:`r1reward.data.sources.on_swap`): for toy pairs the stored teacher
        analysis (which names responses by position) is rewritten for the new order.
        """
        meta = dict(self.meta)
        meta["swapped"] = not bool(meta.get("swapped", False))
        out = replace(
            self,
            response_1=self.response_2,
            response_2=self.response_1,
            preferred=3 - self.preferred,
            images=list(self.images),
            videos=list(self.videos),
            meta=meta,
        )
        sources.on_swap(out)
        return out

    def to_dict(self, image_paths: list[str] | None = None) -> dict[str, Any]:
        """JSON-ready dict (the ``pairs`` format). PIL images need ``image_paths`` (see write_pairs)."""
        if image_paths is None:
            if any(not isinstance(im, str | Path) for im in self.images):
                raise DataError(
                    "to_dict() got in-memory images; pass image_paths (write_pairs saves them as PNG)",
                    record_id=self.id,
                )
            image_paths = [str(im) for im in self.images]
        return {
            "id": self.id,
            "question": self.question,
            "images": list(image_paths),
            "videos": [str(v) for v in self.videos],
            "response_1": self.response_1,
            "response_2": self.response_2,
            "preferred": self.preferred,
            "category": self.category,
            "difficulty": self.difficulty,
            "source": self.source,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, base: str | Path | None = None) -> PreferencePair:
        """Inverse of :meth:`to_dict`; relative image/video paths are resolved against ``base``."""

        def resolve(p: str) -> str:
            return resolve_path(p, base)

        return cls(
            id=str(d["id"]),
            question=str(d["question"]),
            images=[resolve(p) for p in d.get("images", []) or []],
            videos=[resolve(p) for p in d.get("videos", []) or []],
            response_1=str(d["response_1"]),
            response_2=str(d["response_2"]),
            preferred=d["preferred"],
            category=str(d.get("category", "") or ""),
            difficulty=d.get("difficulty"),
            source=str(d.get("source", "") or ""),
            meta=dict(d.get("meta") or {}),
        )


def resolve_path(p: str, base: str | Path | None) -> str:
    """Resolve a relative path against ``base``; absolute paths and data URIs are kept as they are."""
    if p.startswith("data:") or base is None or Path(p).is_absolute():
        return p
    return str(Path(base) / p)


_DATA_URI = re.compile(r"^data:image/[\w.+-]+;base64,", re.I)


def _where(pair: PreferencePair) -> dict[str, Any]:
    return {
        "path": pair.meta.get("source_file"),
        "line": pair.meta.get("source_line"),
        "record_id": pair.id,
        "where": pair.meta.get("source_where", "line"),
    }


def open_images(pair: PreferencePair) -> list[Image.Image]:
    """Open the pair's images as RGB PIL images.

    Raises:
        DataError: naming the data file, its line and the pair id when an image file is missing
            or unreadable.
    """
    out: list[Image.Image] = []
    for im in pair.images:
        if isinstance(im, Image.Image):
            out.append(im.convert("RGB") if im.mode != "RGB" else im)
            continue
        s = str(im)
        try:
            if _DATA_URI.match(s):
                raw = base64.b64decode(s.split(",", 1)[1])
                out.append(Image.open(io.BytesIO(raw)).convert("RGB"))
                continue
            if not Path(s).is_file():
                raise DataError(
                    f"image file not found: {s} (expected an existing file; pass image_root= "
                    "to load() if the images live elsewhere)",
                    **_where(pair),
                )
            with Image.open(s) as f:
                out.append(f.convert("RGB"))
        except DataError:
            raise
        except Exception as e:  # noqa: BLE001 - re-raised with the record's location
            raise DataError(f"cannot open image {s[:200]}: {e}", **_where(pair)) from e
    return out


def check_media(pair: PreferencePair) -> None:
    """Raise :class:`DataError` if any image or video path of ``pair`` does not exist."""
    for im in pair.images:
        if isinstance(im, str) and not _DATA_URI.match(im) and not Path(im).is_file():
            raise DataError(
                f"image file not found: {im} (expected an existing file; pass image_root= to "
                "load() if the images live elsewhere)",
                **_where(pair),
            )
    for v in pair.videos:
        if not Path(v).exists():
            raise DataError(
                f"video not found: {v} (expected an existing file or folder of frames)",
                **_where(pair),
            )
