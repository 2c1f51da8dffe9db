"""The chapter "Using the judge": best-of-N selection, the oracle reward, the policy warm-up.

Best-of-N is checked with rule judges whose every verdict is known: a perfect judge picks a right
answer whenever there is one (its curve is the oracle's), and a judge that always says "1" is
pure position bias (every pair flips with the order, and the order-averaged matrix is all 0.5).
"""

from __future__ import annotations

import math

import pytest

from r1reward.chapters.judge_grpo import oracle_reward
from r1reward.chapters.judge_use import best_of_n, correct_answer, is_correct
from r1reward.evaluate import FunctionSampler
from r1reward.toy.world import make_pairs
from r1reward.verdict_scorers import SamplerVerdicts

PAIRS = list({p.question: p for p in make_pairs(12, seed=5, split="heldout")}.values())[:3]
assert len(PAIRS) == 3  # three different questions: the rule judge below looks the truth up by it
TRUTH = {p.question: correct_answer(p) for p in PAIRS}


def _wrong(pair) -> str:
    return pair.response_1 if pair.response_1 != correct_answer(pair) else pair.response_2


def _truthful(conversation, sample_index, seed) -> str:
    """Prefers the true sentence for the question; when neither is, the alphabetically first
    response (so its verdict never depends on the order either)."""
    text = conversation[0]["content"][-1]["text"]
    question = text.split("###### [Question]:\n")[1].split("\n###### [Response 1]")[0].strip()
    first = text.split("###### [Response 1]:\n")[1].split("\n###### [Response 2]")[0].strip()
    second = text.split("###### [Response 2]:\n")[1].split("\n###### **Output")[0].strip()
    if TRUTH[question] in (first, second):
        return f"<think>x</think><answer>{1 if first == TRUTH[question] else 2}</answer>"
    return f"<think>x</think><answer>{1 if first < second else 2}</answer>"


def _samples() -> list[list[str]]:
    # prompt 0: right answer only 4th; prompt 1: never right; prompt 2: wrong x3 then right
    a, b, c = PAIRS
    return [
        [_wrong(a), _wrong(a), "gibberish", correct_answer(a)],
        [_wrong(b), "other", _wrong(b), "other"],
        [_wrong(c), _wrong(c), _wrong(c), correct_answer(c)],
    ]


def test_correct_answer_is_one_of_the_pair_and_is_checked_exactly() -> None:
    for p in PAIRS:
        right = correct_answer(p)
        assert right in (p.response_1, p.response_2)
        assert is_correct(p, f"  {right}\n") and not is_correct(p, _wrong(p))
    completions = [[{"role": "assistant", "content": correct_answer(PAIRS[0])}], _wrong(PAIRS[1])]
    answers = [correct_answer(PAIRS[0]), correct_answer(PAIRS[1])]
    assert oracle_reward(["q", "q"], completions, answers) == [1.0, 0.0]


def test_best_of_n_with_a_perfect_judge_reaches_the_oracle() -> None:
    judge = SamplerVerdicts(FunctionSampler(_truthful))
    out = best_of_n(
        PAIRS, _samples(), judge, [1, 2, 4], scalar=lambda ps, ans: [len(a) for a in ans]
    )
    acc = out["accuracy"]
    assert acc["oracle"] == pytest.approx([0.0, 0.0, 2 / 3])
    assert acc["judge"] == acc["oracle"]
    # random pick: expected share of right samples among the first N
    assert acc["random"] == pytest.approx([0.0, 0.0, (1 / 4 + 0 + 1 / 4) / 3])
    # majority: the most frequent answer (first seen on ties) is wrong everywhere
    assert acc["majority"] == [0.0, 0.0, 0.0]
    assert set(acc) == {"random", "majority", "judge", "judge_one_order", "scalar", "oracle"}
    # distinct answers: 3, 2, 2 -> 3 + 1 + 1 unordered pairs, each judged in both orders
    assert out["pairs_judged"] == 5 and out["judgments"] == 10
    assert out["order_gap"] == 0.0 and out["swap_flip_rate"] == 0.0


def test_best_of_n_exposes_pure_position_bias() -> None:
    always_first = SamplerVerdicts(
        FunctionSampler(lambda c, i, s: "<think>x</think><answer>1</answer>")
    )
    out = best_of_n(PAIRS, _samples(), always_first, [4])
    assert out["swap_flip_rate"] == 1.0 and out["order_gap"] == pytest.approx(1.0)
    # one order: the first distinct answer always wins; both orders: all ties -> the first again
    assert out["accuracy"]["judge_one_order"] == [0.0]
    assert out["accuracy"]["judge"] == [0.0]
    assert "scalar" not in out["accuracy"]


def test_best_of_n_refuses_short_sample_lists() -> None:
    judge = SamplerVerdicts(FunctionSampler(_truthful))
    with pytest.raises(ValueError, match=r"prompt 1 \(.*\) has 2 samples, N=4"):
        best_of_n(PAIRS[:2], [["a"] * 4, ["a"] * 2], judge, [4])


def test_warm_up_policy_lowers_the_answer_loss(tmp_path) -> None:
    """Two steps on the untrained tiny model: a saved, loadable policy and a finite loss."""
    from r1reward.chapters.judge_use import greedy_accuracy, warm_up_policy
    from r1reward.models import load_model
    from r1reward.toy.tiny_model import build_tiny_model

    tiny = build_tiny_model(tmp_path / "tiny")
    pairs = make_pairs(8, seed=0)
    losses = warm_up_policy(
        tiny, tmp_path / "policy", pairs, steps=3, batch_size=4, lr=3e-3, progress=False
    )
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]
    model, processor = load_model(tmp_path / "policy")
    assert 0.0 <= greedy_accuracy(model, processor, PAIRS) <= 1.0


def test_recorded_reward_keeps_what_it_paid_right_and_wrong_answers() -> None:
    from r1reward.chapters.judge_grpo import _Recorded

    answers = [correct_answer(p) for p in PAIRS[:2]]
    completions = [answers[0], _wrong(PAIRS[0]), answers[1], _wrong(PAIRS[1])]
    recorded = _Recorded(lambda prompts, completions, **kw: [0.5, 1.5, -1.0, -1.0], "toy")
    out = recorded(["q"] * 4, completions, answer=[answers[0]] * 2 + [answers[1]] * 2)
    assert out == [0.5, 1.5, -1.0, -1.0] and recorded.__name__ == "toy"
    assert recorded.calls == [
        {"reward_mean": 0.0, "sample_accuracy": 0.5, "reward_right": -0.25, "reward_wrong": 0.25}
    ]
