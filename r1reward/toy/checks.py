"""Reading toy judgments: which step of a judge's toy analysis holds, and the text-only
baselines that must sit at chance.

:func:`analysis_chain` checks an analysis in the toy teacher's phrasing
(:func:`r1reward.toy.world.analysis_text`) from its words alone (the toy consistency judge,
:class:`r1reward.toy.judge.RuleJudge`, uses it); :func:`judgment_breakdown` measures a judge's
outputs step by step against the scene; :data:`TEXT_HEURISTICS` are judges that never look at
the image, at chance on the toy by construction (tests/test_toy.py) -- the must-show check that
the task needs the image.
"""

from __future__ import annotations

import re
from typing import Any

from r1reward.data.schema import PreferencePair
from r1reward.toy.world import analysis_verdict, oracle_answer, teacher_analysis

__all__ = [
    "TEXT_HEURISTICS",
    "analysis_chain",
    "heuristic_accuracy",
    "judgment_breakdown",
    "text_heuristic_accuracy",
]


def judgment_breakdown(pairs: list[PreferencePair], texts: list[str]) -> dict[str, float]:
    """Where a judge's toy analyses go right or wrong, step by step (shares of ``len(pairs)``).

    For each pair and the judge's output text (``<think>analysis</think><answer>k</answer>`` or
    just the analysis), with the analysis in the toy teacher's phrasing:

    - ``observation_right``: its first sentence is the teacher's, i.e. it states the image's true
      fact (the one the preferred response claims);
    - ``marks_follow_observation``: both "which is right/wrong" marks are those that the
      analysis's *own* observation implies (whatever it observed);
    - ``verdict_follows_marks``: the closing "Response N is better." names the response it
      called right;
    - ``accuracy``: the ``<answer>`` (else the closing sentence) equals the label.

    Texts in another phrasing count as not following (the shares are then low, not wrong).
    """
    n = max(1, len(pairs))
    obs = marks = verdict = acc = 0
    for pair, text in zip(pairs, texts):
        body = text.split("<think>")[-1].split("</think>")[0].strip()
        good = teacher_analysis(pair, pair.preferred)
        chain = analysis_chain(body)
        obs += body.split(" Response 1 says ")[0] == good.split(" Response 1 says ")[0]
        if chain is not None:
            marks += chain["marks_follow_observation"]
            verdict += chain["verdict_follows_marks"]
        ans = re.search(r"<answer>\s*([12])\s*</answer>", text)
        final = int(ans.group(1)) if ans else analysis_verdict(body)
        acc += final == pair.preferred
    return {
        "observation_right": obs / n,
        "marks_follow_observation": marks / n,
        "verdict_follows_marks": verdict / n,
        "accuracy": acc / n,
        "n": len(pairs),
    }


_MARKS = re.compile(
    r"Response 1 says (.+), which is (right|wrong)\. Response 2 says (.+), which is (right|wrong)\."
)


def analysis_chain(analysis: str) -> dict[str, bool] | None:
    """Whether each step of a toy analysis follows from the one before (None: not toy phrasing).

    A toy analysis (:func:`analysis_text`) states an observation, marks each response's claim
    right or wrong, and names the better response. Without knowing the image, the text alone says
    whether

    - ``marks_follow_observation``: each claim is marked "right" exactly when the observation
      sentence (the text before "Response 1 says") ends with that claim;
    - ``verdict_follows_marks``: the closing "Response N is better." names the one response
      marked right.

    ``"The number of circles in the image is 3. Response 1 says 2, which is right. ..."``
    contradicts itself in the first step whatever it concludes.
    """
    body = analysis.strip()
    m = _MARKS.search(body)
    if not m:
        return None
    c1, m1, c2, m2 = m.groups()
    first = body.split(" Response 1 says ")[0]
    implied = tuple("right" if first.endswith(f" {c}.") else "wrong" for c in (c1, c2))
    said = analysis_verdict(body)
    called = [k for k, mk in ((1, m1), (2, m2)) if mk == "right"]
    return {
        "marks_follow_observation": (m1, m2) == implied,
        "verdict_follows_marks": said is not None and called == [said],
    }


# ----------------------------------------------------------------------------------------------
# text-only baselines (they must sit at chance: the task needs the image)


def _overlap(question: str, response: str) -> int:
    q = set(re.findall(r"[a-z0-9]+", question.lower()))
    return len(q & set(re.findall(r"[a-z0-9]+", response.lower())))


TEXT_HEURISTICS: dict[str, Any] = {
    "longer": lambda p: 1 if len(p.response_1) >= len(p.response_2) else 2,
    "shorter": lambda p: 1 if len(p.response_1) <= len(p.response_2) else 2,
    "response 1": lambda p: 1,
    "more overlap": lambda p: (
        1 if _overlap(p.question, p.response_1) >= _overlap(p.question, p.response_2) else 2
    ),
}
"""Text-only judges (ties go to response 1, whose position is itself random)."""


def text_heuristic_accuracy(pairs: list[PreferencePair]) -> dict[str, float]:
    """Accuracy of each text-only heuristic of :data:`TEXT_HEURISTICS` on any pairs (toy or real)."""
    n = max(len(pairs), 1)
    return {
        name: sum(f(p) == p.preferred for p in pairs) / n for name, f in TEXT_HEURISTICS.items()
    }


def heuristic_accuracy(pairs: list[PreferencePair]) -> dict[str, float]:
    """Accuracy of each text-only heuristic and of :func:`oracle_answer` on toy ``pairs``."""
    out = text_heuristic_accuracy(pairs)
    n = max(len(pairs), 1)
    out["oracle (reads the scene)"] = sum(oracle_answer(p) == p.preferred for p in pairs) / n
    return out
