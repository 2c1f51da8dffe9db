"""The R1-Reward rule-based rewards (arXiv 2505.02835, Sec. 3, "Consistency Reward").

- Format reward: 1 if the output is exactly ``<think>...</think><answer>1|2</answer>``
  (:func:`r1reward.prompt.parse_judgment`'s ``well_formed``), else 0.
- Result reward: 1 if the verdict in ``<answer>`` equals the human label, else 0.
- Consistency: a judge model says whether the analysis supports the verdict: 1 (it does),
  -1 (it does not), 0 (the judge gave no usable answer). See :mod:`r1reward.judges`.
- Final reward: ``Result * (1 + 0.5 * Consistency) + 0.5 * Format`` (:func:`combine`), so a
  right verdict is worth 1.5 with a consistent analysis and 0.5 with an inconsistent one, and a
  wrong verdict is never rewarded beyond the format bonus.

Every function validates its inputs and raises ``ValueError`` (naming the offending value, and the
record index for the batch versions) instead of guessing. No path turns an exception into a
positive reward: text that is not a string is simply not a judgment and earns 0.0. (The released
reference verifier returned 1.0 when it raised; that silently rewards broken outputs.)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

from r1reward.prompt import parse_judgment

__all__ = [
    "CONSISTENCY_WEIGHT",
    "FORMAT_WEIGHT",
    "format_reward",
    "result_reward",
    "combine",
    "r1_reward",
    "format_rewards",
    "result_rewards",
    "combine_batch",
    "r1_rewards",
]

#: Weight of the consistency term inside the result reward (paper Sec. 3).
CONSISTENCY_WEIGHT = 0.5
#: Weight of the format reward (paper Sec. 3).
FORMAT_WEIGHT = 0.5


def _number(value: Any) -> float | None:
    """``value`` as a float if it is a real number (Python, NumPy or 0-d tensor), else None."""
    if isinstance(value, numbers.Real):
        return float(value)
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        item = value.item()
        if isinstance(item, numbers.Real):
            return float(item)
    return None


def _check(name: str, value: Any, allowed: tuple[int, ...], where: str = "") -> int:
    """The allowed integer equal to ``value``, or ValueError naming the value."""
    number = _number(value)
    if name == "label" and isinstance(value, bool):
        number = None  # True/False as a label hides a bug; labels are the ints 1 or 2
    if number is None or math.isnan(number) or number not in allowed:
        allowed_text = ", ".join(str(a) for a in allowed)
        raise ValueError(
            f"r1reward.rewards: {where}{name} must be one of {{{allowed_text}}}, got {value!r}"
        )
    return int(number)


def format_reward(text: str) -> float:
    """1.0 if ``text`` is a well-formed judgment (Table-1 format with answer 1 or 2), else 0.0.

    A non-string (None, bytes, ...) gives 0.0.
    """
    return 1.0 if parse_judgment(text).well_formed else 0.0


def result_reward(text: str, label: int) -> float:
    """1.0 if the verdict parsed from ``text`` equals ``label`` (1 or 2), else 0.0.

    The verdict is :func:`r1reward.prompt.parse_judgment`'s ``answer``: a missing, invalid or
    self-contradicting answer is never right. A non-string ``text`` gives 0.0.

    Raises:
        ValueError: if ``label`` is not 1 or 2.
    """
    truth = _check("label", label, (1, 2))
    answer = parse_judgment(text).answer
    return 1.0 if answer is not None and answer == truth else 0.0


def combine(format: float, result: float, consistency: float) -> float:
    """R1-Reward's final reward ``result * (1 + 0.5 * consistency) + 0.5 * format`` (paper Sec. 3).

    Args:
        format: the format reward, 0 or 1.
        result: the result reward, 0 or 1.
        consistency: 1 (the analysis supports the verdict), -1 (it does not), or 0 (no usable
            answer from the judge).

    Returns:
        One of 0.0, 0.5, 1.0, 1.5, 2.0 (a right verdict with a consistent analysis and the right
        format gives 2.0).

    Raises:
        ValueError: if a value lies outside its set (NaN included).
    """
    f = _check("format", format, (0, 1))
    r = _check("result", result, (0, 1))
    c = _check("consistency", consistency, (1, -1, 0))
    return r * (1.0 + CONSISTENCY_WEIGHT * c) + FORMAT_WEIGHT * f


def r1_reward(text: str, label: int, consistency: float) -> float:
    """``combine(format_reward(text), result_reward(text, label), consistency)``."""
    return combine(format_reward(text), result_reward(text, label), consistency)


# ----------------------------------------------------------------------------- batches


def _check_lengths(**seqs: Sequence[Any]) -> int:
    lengths = {name: len(seq) for name, seq in seqs.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{name}={n}" for name, n in lengths.items())
        raise ValueError(f"r1reward.rewards: batch lengths differ ({shown})")
    return next(iter(lengths.values()), 0)


def _at(i: int, fn: Any, *args: Any) -> float:
    try:
        return fn(*args)
    except ValueError as err:
        raise ValueError(f"record {i}: {err}") from err


def format_rewards(texts: Sequence[str]) -> list[float]:
    """:func:`format_reward` for each text."""
    return [format_reward(t) for t in texts]


def result_rewards(texts: Sequence[str], labels: Sequence[int]) -> list[float]:
    """:func:`result_reward` for each (text, label); ValueError names the first bad record."""
    _check_lengths(texts=texts, labels=labels)
    return [_at(i, result_reward, t, y) for i, (t, y) in enumerate(zip(texts, labels))]


def combine_batch(
    formats: Sequence[float], results: Sequence[float], consistencies: Sequence[float]
) -> list[float]:
    """:func:`combine` element-wise; ValueError names the first bad record."""
    _check_lengths(formats=formats, results=results, consistencies=consistencies)
    return [
        _at(i, combine, f, r, c) for i, (f, r, c) in enumerate(zip(formats, results, consistencies))
    ]


def r1_rewards(
    texts: Sequence[str], labels: Sequence[int], consistencies: Sequence[float]
) -> list[float]:
    """:func:`r1_reward` for each (text, label, consistency)."""
    _check_lengths(texts=texts, labels=labels, consistencies=consistencies)
    return [
        _at(i, r1_reward, t, y, c) for i, (t, y, c) in enumerate(zip(texts, labels, consistencies))
    ]
