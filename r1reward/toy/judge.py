"""The toy world's consistency judge: a rule that reads a toy analysis step by step.

It stands in for the paper's judge model (Qwen2.5-VL-7B-Instruct asked whether the analysis
supports the verdict, Sec. 3.2) on CPU. Recipes and the CLI reach it as the judge kind ``rule``
through :func:`r1reward.judges.build_judge`, which imports this module only when that kind is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from r1reward.judges import askable, check_lengths
from r1reward.toy import checks, world

__all__ = ["RuleJudge"]


class RuleJudge:
    """The toy world's judge: does the analysis's own chain of reasoning lead to the verdict?

    A toy analysis states an observation, marks each response right or wrong, and closes with
    "Response N is better." (:func:`r1reward.toy.world.analysis_text`). Returns 1 when the closing
    sentence equals the verdict *and* every step follows from the one before
    (:func:`r1reward.toy.checks.analysis_chain`): the marks from the observation, the closing
    sentence from the marks. Returns -1 when the closing sentence names the other response, or
    when the analysis contradicts itself on the way ("the image shows 3 circles ... Response 1
    says 2, which is right"): such an analysis does not support any verdict, which is what the
    paper's judge model is asked. Returns 0 when the analysis names no response or the verdict is
    ``None``. Text that is not in the toy phrasing is judged by its closing sentence alone. Like
    the paper's judge, it reads only the text: it does not know the image, so a consistent
    analysis of a misread image is still consistent.
    """

    #: a local rule, free to run: RL asks it even when the consistency reward is off (to log the
    #: consistency rate); a model or paid judge is asked only when its reward is used
    free = True

    def __init__(self) -> None:
        self._verdict = world.analysis_verdict
        self._chain = checks.analysis_chain

    def judge(
        self,
        analyses: Sequence[str],
        answers: Sequence[int | None],
        images: Sequence[Sequence[Any]] | None = None,
    ) -> list[int]:
        """``B`` consistency values in {1, -1, 0} for ``B`` analyses and their verdicts."""
        check_lengths(analyses, answers, images)
        out = []
        for analysis, answer in zip(analyses, answers):
            if not askable(analysis, answer):
                out.append(0)
                continue
            said = self._verdict(analysis)
            if said is None:
                out.append(0)
                continue
            chain = self._chain(analysis)
            follows = chain is None or all(chain.values())
            out.append(1 if said == answer and follows else -1)
        return out
