"""The toy world's teacher: a noisy oracle that stands in for GPT-4o on CPU (paper Sec. 4.3).

:func:`r1reward.curation.curate` asks it for Table-1 judgments like any other
:class:`~r1reward.curation.Teacher`; recipes reach it as ``data.teacher.kind: toy`` through
:func:`r1reward.curation.make_teacher`, which imports this module only when that kind is used.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Sequence
from typing import Any

from r1reward.curation import Reply
from r1reward.prompt import format_target
from r1reward.toy import world

__all__ = ["ToyTeacher"]


class ToyTeacher:
    """A noisy oracle for the toy world (stands in for GPT-4o on CPU).

    On each try it argues for the wrong response with probability
    ``min(max_error, base_error + error_per_difficulty * (level - 1))``, where ``level`` is the toy
    pair's own difficulty level (``pair.meta["level"]``, else ``pair.difficulty``, else 1); the
    analysis is written by :func:`r1reward.toy.world.teacher_analysis` for the chosen verdict. Tries
    are independent and deterministic given ``(seed, pair.id, attempt)``.
    """

    name = "toy"

    def __init__(
        self,
        seed: int = 0,
        *,
        base_error: float = 0.1,
        error_per_difficulty: float = 0.15,
        max_error: float = 0.9,
    ) -> None:
        if not 0.0 <= base_error <= 1.0 or not 0.0 <= max_error <= 1.0:
            raise ValueError("ToyTeacher: base_error and max_error must lie in [0, 1]")
        self.seed = int(seed)
        self.base_error = float(base_error)
        self.error_per_difficulty = float(error_per_difficulty)
        self.max_error = float(max_error)

    @staticmethod
    def level(pair: Any) -> int:
        """The toy pair's level (1 = easy) that drives the teacher's error rate."""
        level = (pair.meta or {}).get("level", pair.difficulty)
        return int(level) if level is not None else 1

    def error_rate(self, pair: Any) -> float:
        """Probability that one try argues for the wrong response."""
        p = self.base_error + self.error_per_difficulty * (self.level(pair) - 1)
        return min(self.max_error, max(0.0, p))

    def analyse(self, pairs: Sequence[Any], attempt: int) -> list[Reply]:
        """One Table-1 judgment per pair for try ``attempt`` (1-based)."""
        out = []
        for pair in pairs:
            key = f"{self.seed}|{pair.id}|{attempt}".encode()
            rng = random.Random(zlib.crc32(key))
            verdict = pair.preferred
            if rng.random() < self.error_rate(pair):
                verdict = 3 - pair.preferred
            out.append(Reply(format_target(world.teacher_analysis(pair, verdict), verdict)))
        return out
