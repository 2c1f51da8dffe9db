"""Training and held-out pairs from a recipe's ``data`` section, never overlapping.

Every trainer (SFT, the scalar baseline, RL) and every held-out report reads its pairs through
:func:`load_split`, so a held-out figure is always measured on pairs the model was not trained
on:

* ``source: toy`` (or another generated source, :mod:`r1reward.data.sources`) -- its ``train`` and
  ``heldout`` splits, generated from disjoint seed streams (for the toy world its ``make_pairs``,
  imported when first asked for); ``train_pairs`` / ``heldout_pairs`` of each.
* ``source: PATH`` with ``heldout: PATH`` -- the held-out file as it is; any pair of the training
  file whose id is also in the held-out file is dropped from training (with a warning).
* ``source: PATH`` with ``heldout_fraction: f`` -- a seeded share ``f`` of the training file's
  ids (the ids whose ``sha256(f"{data.seed}:{id}")`` sort first) is held out and never trained
  on. Pairs sharing an id stay on the same side; the choice of an id does not depend on the order
  of the file.
* ``source: PATH`` with neither -- all pairs train, and asking for held-out pairs is an error
  (the old behaviour, the first training pairs as "held-out", measured training accuracy).

``train_pairs`` / ``heldout_pairs`` cap each side after the split (``null``: all of it).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from typing import Any

from r1reward.data import sources

__all__ = ["heldout_ids", "is_placeholder", "load_split", "split_pairs"]

log = logging.getLogger("r1reward.data")

SPLITS = ("train", "heldout")


def heldout_ids(ids: Iterable[str], fraction: float, seed: int = 0) -> set[str]:
    """The ids held out by ``data.heldout_fraction``: ``round(fraction * n)`` of the ``n``
    distinct ids (at least one), those whose ``sha256(f"{seed}:{id}")`` sorts first.

    Raises:
        ValueError: ``fraction`` not strictly between 0 and 1.
    """
    if not isinstance(fraction, int | float) or isinstance(fraction, bool) or not 0 < fraction < 1:
        raise ValueError(f"data.heldout_fraction={fraction!r}: expected a number in (0, 1)")
    unique = sorted(set(ids))
    if not unique:
        return set()
    ranked = sorted(unique, key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
    k = min(len(unique), max(1, round(fraction * len(unique))))
    return set(ranked[:k])


def is_placeholder(value: Any) -> bool:
    """A recipe value left as ``<...>`` (the GPU recipes' data paths until the user sets them)."""
    return isinstance(value, str) and value.startswith("<") and value.endswith(">")


def _cap(pairs: list, n: Any) -> list:
    return pairs if n is None else pairs[: int(n)]


def _load_file(path: str, key: str) -> list:
    from pathlib import Path

    from r1reward.data import load

    if is_placeholder(path):
        raise FileNotFoundError(
            f"data.{key} is still the placeholder {path!r}: set it to a pairs "
            f"file, e.g. data.{key}=/data/pairs.jsonl"
        )
    if not Path(path).exists():
        raise FileNotFoundError(f"data.{key}: {path}: no such file")
    return list(load(path))


def _check_heldout_keys(data: dict) -> tuple[Any, Any]:
    held_path, fraction = data.get("heldout"), data.get("heldout_fraction")
    if held_path and fraction is not None:
        raise ValueError(
            f"data: set data.heldout ({held_path}) or data.heldout_fraction ({fraction}), not both"
        )
    source = str(data.get("source", "toy"))
    if fraction is not None and sources.is_generated(source):
        raise ValueError(
            f"data.heldout_fraction applies to a pairs file (data.source: PATH); "
            f"the generated source {source!r} has its own held-out split "
            "(data.heldout_pairs)"
        )
    return held_path, fraction


def _generated(data: dict, split: str) -> list:
    """One split of a generated source such as the toy world (or the ``data.heldout`` file
    standing in for its held-out)."""
    if split == "heldout" and data.get("heldout"):
        return _cap(_load_file(str(data["heldout"]), "heldout"), data.get("heldout_pairs"))
    key, default = ("train_pairs", 64) if split == "train" else ("heldout_pairs", 32)
    make_pairs = sources.get_source(str(data.get("source", "toy"))).make_pairs
    pairs = list(
        make_pairs(
            int(data.get(key, default)),
            seed=int(data.get("seed", 0)),
            split=split,
            image_size=int(data.get("image_size", 56)),
        )
    )
    if split == "train" and data.get("heldout"):  # a held-out file is never trained on
        ids = {p.id for p in _load_file(str(data["heldout"]), "heldout")}
        pairs = [p for p in pairs if p.id not in ids]
    return pairs


def split_pairs(data: dict, *, cap: bool = True) -> tuple[list, list | None]:
    """``(train, heldout)`` for a recipe's ``data`` section (see the module docstring).

    ``heldout`` is ``None`` when the section declares no held-out source (a pairs file without
    ``heldout`` or ``heldout_fraction``). With ``cap=False`` the training side is not cut to
    ``train_pairs`` (RL streams the whole training side).

    Raises:
        ValueError: both ``heldout`` and ``heldout_fraction`` set, or a bad fraction.
        FileNotFoundError: a data file that does not exist.
    """
    source = str(data.get("source", "toy"))
    held_path, fraction = _check_heldout_keys(data)
    if sources.is_generated(source):
        return _generated(data, "train"), _generated(data, "heldout")
    pairs = _load_file(source, "source")
    if held_path:
        held = _load_file(str(held_path), "heldout")
        ids = {p.id for p in held}
        train = [p for p in pairs if p.id not in ids]
        if len(train) < len(pairs):
            log.warning(
                "data.source %s: %d pair(s) whose id is in data.heldout %s are not trained on",
                source,
                len(pairs) - len(train),
                held_path,
            )
    elif fraction is not None:
        ids = heldout_ids((p.id for p in pairs), fraction, int(data.get("seed", 0)))
        held = [p for p in pairs if p.id in ids]
        train = [p for p in pairs if p.id not in ids]
    else:
        train, held = pairs, None
    if cap:
        train = _cap(train, data.get("train_pairs"))
    if held is not None:
        held = _cap(held, data.get("heldout_pairs"))
    return train, held


def load_split(data: dict, split: str) -> list:
    """The ``train`` or ``heldout`` pairs of a recipe's ``data`` section, capped.

    Raises:
        ValueError: an unknown split, or ``heldout`` asked of a pairs file that declares no
            held-out source.
    """
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: expected one of {SPLITS}")
    if sources.is_generated(str(data.get("source", "toy"))):  # only the split asked for is made
        _check_heldout_keys(data)
        return _generated(data, split)
    train, held = split_pairs(data)
    if split == "train":
        return train
    if held is None:
        raise ValueError(
            f"data.source {data.get('source')}: no held-out pairs declared; set "
            "data.heldout=PATH or data.heldout_fraction=0.1 (a seeded share of the file, never "
            "trained on)"
        )
    return held
