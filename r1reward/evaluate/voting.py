"""The deterministic rules of an evaluation: answer orders, Voting@K and its tie rule, seeds.

A *unit* is one (pair, order); :func:`unit_orders` says which orders a pair is judged in,
:func:`displayed` how it is shown, :func:`vote` the majority over K judgments (R1-Reward Sec. 4.3)
and :func:`hash_verdict` the fixed verdict that breaks a tie when the greedy one cannot.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from typing import Any

__all__ = [
    "CHOSEN_FIRST",
    "CHOSEN_SECOND",
    "GREEDY",
    "ORDER_MODES",
    "chunk_seed",
    "displayed",
    "hash_verdict",
    "unit_orders",
    "vote",
]

CHOSEN_FIRST = "chosen-first"
CHOSEN_SECOND = "chosen-second"
ORDER_MODES = ("both", "random", "chosen-first")
#: The ``sample`` of a unit's greedy judgment (sampled ones are 0..K-1).
GREEDY = "greedy"


def hash_verdict(key: str) -> int:
    """A fixed pseudo-random verdict (1 or 2) for ``key``: the lowest bit of its SHA-256."""
    return 1 + (hashlib.sha256(key.encode("utf-8")).digest()[0] & 1)


def chunk_seed(seed: int, chunk_index: int) -> int:
    """The sampling seed of chunk ``chunk_index``: a 31-bit hash of ``(seed, chunk_index)``."""
    digest = hashlib.sha256(f"r1reward-eval|{seed}|{chunk_index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def vote(answers: Iterable[int | None], *, tiebreak: int | None = None) -> tuple[int | None, bool]:
    """Majority vote over judgments (Voting@K, paper Sec. 4.3).

    Args:
        answers: parsed verdicts, 1, 2 or ``None`` (unparseable, ignored by the vote).
        tiebreak: verdict to return on a tie (e.g. the greedy verdict); ``None`` leaves it open.

    Returns:
        ``(verdict, tie)``. ``verdict`` is 1 or 2, or ``None`` when no answer was parseable or
        on a tie without ``tiebreak``. ``tie`` is true when 1 and 2 got the same (non-zero) count.
    """
    counts = Counter(a for a in answers if a in (1, 2))
    n1, n2 = counts.get(1, 0), counts.get(2, 0)
    if n1 == n2:
        if n1 == 0:
            return None, False
        return (tiebreak if tiebreak in (1, 2) else None), True
    return (1 if n1 > n2 else 2), False


def unit_orders(pair_id: str, mode: str, seed: int = 0) -> tuple[str, ...]:
    """Which orders a pair is judged in: ``both`` -> both, ``chosen-first`` -> the reference
    layout, ``random`` -> one order from :func:`hash_verdict` of ``"{seed}|{pair_id}"``."""
    if mode == "both":
        return (CHOSEN_FIRST, CHOSEN_SECOND)
    if mode == "chosen-first":
        return (CHOSEN_FIRST,)
    if mode == "random":
        return (CHOSEN_FIRST if hash_verdict(f"{seed}|{pair_id}") == 1 else CHOSEN_SECOND,)
    raise ValueError(f"orders must be one of {', '.join(ORDER_MODES)}; got {mode!r}")


def displayed(pair: Any, order: str) -> tuple[str, str, int]:
    """(Response 1, Response 2, right answer) for ``pair`` shown in ``order``."""
    if pair.preferred not in (1, 2):
        raise ValueError(f"pair {pair.id!r}: preferred must be 1 or 2, got {pair.preferred!r}")
    chosen, rejected = (
        (pair.response_1, pair.response_2)
        if pair.preferred == 1
        else (pair.response_2, pair.response_1)
    )
    if order == CHOSEN_FIRST:
        return chosen, rejected, 1
    return rejected, chosen, 2
