"""Scalar rewards from the pairwise judge (r1reward.verdicts): the verdict distribution read after
the analysis, both orders, pointwise, group ranking and the Bradley-Terry fit."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from PIL import Image

from r1reward.evaluate import FunctionSampler
from r1reward.prompt import build_messages
from r1reward.verdict_scorers import (
    ModelVerdicts,
    SamplerVerdicts,
    forced_prefix,
    verdict_probabilities,
    verdict_token_ids,
)
from r1reward.verdicts import (
    bradley_terry,
    group_cost,
    rank_group,
    rank_groups,
    score_pair,
    score_pairs,
    score_reference,
)

IMAGE = Image.new("RGB", (56, 56), (30, 160, 40))


@pytest.fixture(scope="module")
def tiny() -> Iterator[tuple]:
    import tempfile

    from r1reward.models import load_model
    from r1reward.toy.tiny_model import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        model, processor = load_model(str(build_tiny_model(f"{tmp}/tiny")))
        model.eval()
        yield model, processor


def _response(conversation) -> tuple[str, str]:
    text = conversation[0]["content"][-1]["text"]
    first = text.split("###### [Response 1]:\n")[1].split("###### [Response 2]:")[0]
    second = text.split("###### [Response 2]:\n")[1].split("###### **Output")[0]
    return first.strip(), second.strip()


def _by_number(conversation, sample_index, seed) -> str:
    """A rule judge: the response that names the larger number is better."""
    a, b = (int(r.split()[-1]) for r in _response(conversation))
    answer = 1 if a > b else 2
    return f"<think>{a} against {b}.</think><answer>{answer}</answer>"


class CountingScorer:
    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, []

    def judge(self, conversations, *, k, greedy, seed=None):
        self.calls.append((len(conversations), k, greedy))
        return self.inner.judge(conversations, k=k, greedy=greedy, seed=seed)


# ---------------------------------------------------------------------- verdict distribution
def test_forced_prefix_closes_every_kind_of_judgment() -> None:
    assert forced_prefix("<think>a b</think><answer>2</answer>") == "<think>a b</think><answer>"
    assert forced_prefix("<think>cut at the len") == "<think>cut at the len</think><answer>"
    assert forced_prefix("no tags <answer>1") == "<think>no tags</think><answer>"
    assert forced_prefix("") == "<think></think><answer>"


def test_verdict_probability_is_the_models_next_token_distribution(tiny) -> None:
    """p_first and the mass equal what completion_logprobs gives for the tokens '1' and '2'
    appended to the same prefix (an independent path: right-padded completion tokens)."""
    from r1reward.rollout import build_batch, completion_logprobs

    model, processor = tiny
    tok = processor.tokenizer
    convs = [
        build_messages("How many squares?", "Two.", "Three.", images=[IMAGE]),
        build_messages("A longer question without an image here?", "Yes", "No"),
    ]
    prefixes = ["<think>the first counts wrong</think><answer>", forced_prefix("")]
    got = verdict_probabilities(model, processor, convs, prefixes, batch_size=2)
    id1, id2 = verdict_token_ids(processor)
    for conv, prefix, (p_first, mass) in zip(convs, prefixes, got):
        lps = []
        for digit in ("1", "2"):
            ids = tok.encode(prefix + digit, add_special_tokens=False)
            batch, mask = build_batch(processor, [conv], [ids])
            with torch.no_grad():
                lp = completion_logprobs(model, batch, mask)
            lps.append(float(lp[0, mask[0].bool()][-1]))
        assert ids[-1] == (id1 if digit == "1" else id2)
        assert p_first == pytest.approx(
            math.exp(lps[0]) / (math.exp(lps[0]) + math.exp(lps[1])), abs=1e-4
        )
        assert mass == pytest.approx(math.exp(lps[0]) + math.exp(lps[1]), rel=1e-3)


def test_untrained_model_gives_a_number_for_every_judgment(tiny) -> None:
    model, processor = tiny
    scorer = ModelVerdicts(model, processor, max_new_tokens=4, batch_size=8)
    greedy = score_pair(scorer, "q", "one", "two", images=[IMAGE])
    sampled = score_pair(scorer, "q", "one", "two", k=2, seed=3)
    for s in (greedy, sampled):
        assert 0.0 < s.score < 1.0 and math.isfinite(s.score)
        assert s.score == pytest.approx(sum(s.p_1_orders.values()) / 2)
        assert s.order_gap == pytest.approx(abs(s.p_1_orders["as-given"] - s.p_1_orders["swapped"]))
        assert 0.0 < s.verdict_mass < 1.0
    assert len(greedy.p_first) == 2 and len(sampled.p_first) == 4
    # 4 tokens are too few for a parseable verdict: the votes are empty, the score is not
    assert greedy.p_1 is None and greedy.votes["unparseable"] == 2


def test_verdict_token_ids_refuse_a_tokenizer_that_merges_the_verdict() -> None:
    class Merging:
        def encode(self, text, add_special_tokens=False):
            ids = [ord(c) for c in text]
            if text.endswith("<answer>1"):  # '>1' becomes one token
                return ids[:-2] + [9999]
            return ids

    with pytest.raises(
        ValueError, match=r"'<answer>1' does not tokenize as '<answer>' \+ one token"
    ):
        verdict_token_ids(Merging())


# ------------------------------------------------------------------------------------ orders
def test_orders_cancel_position_bias_and_flag_it() -> None:
    always_one = SamplerVerdicts(
        FunctionSampler(lambda c, i, s: "<think>x</think><answer>1</answer>")
    )
    s = score_pair(always_one, "q", "a", "b")
    assert (s.score, s.order_gap, s.swap_disagreement) == (0.5, 1.0, True)
    assert s.p_1_orders == {"as-given": 1.0, "swapped": 0.0}
    right = SamplerVerdicts(FunctionSampler(_by_number))
    s = score_pair(right, "q", "answer 3", "answer 7", k=3)
    assert (s.score, s.order_gap, s.swap_disagreement, s.preferred) == (0.0, 0.0, False, 2)
    assert s.answers == [2] * 6 and s.votes == {"1": 0, "2": 6, "unparseable": 0}
    one_order = score_pair(right, "q", "answer 9", "answer 7", both_orders=False)
    assert (one_order.score, one_order.order_gap, one_order.orders) == (1.0, None, ["as-given"])
    junk = SamplerVerdicts(FunctionSampler(lambda c, i, s: "no verdict"))
    s = score_pair(junk, "q", "a", "b")
    assert (s.score, s.p_1, s.verdict_mass) == (0.5, None, 0.0)


def test_pairs_and_reference_share_one_scorer_call() -> None:
    scorer = CountingScorer(SamplerVerdicts(FunctionSampler(_by_number)))
    pairs = [("q", f"answer {a}", f"answer {b}") for a, b in [(1, 2), (5, 4), (8, 8)]]
    scores = [s.score for s in score_pairs(scorer, pairs, k=2)]
    assert scores == [0.0, 1.0, 0.5]  # a tie of numbers: "2" in both orders, position cancels
    assert scorer.calls == [(6, 2, False)]
    ref = score_reference(scorer, "q", ["answer 1", "answer 9"], "answer 5")
    assert [r.score for r in ref] == [0.0, 1.0] and scorer.calls[-1] == (4, 1, True)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        score_pairs(scorer, pairs, k=0)


# ------------------------------------------------------------------------------------ groups
def test_bradley_terry_recovers_known_strengths() -> None:
    t = torch.tensor([1.0, 0.0, -0.5, 2.0], dtype=torch.float64)
    p = torch.sigmoid(t[:, None] - t[None, :])
    s = bradley_terry(p, l2=1e-8)
    assert torch.allclose(s, t - t.mean(), atol=1e-5)
    shrunk = bradley_terry(p)  # the default ridge shrinks a little and keeps the order
    assert shrunk.argsort().tolist() == t.argsort().tolist()
    assert float(shrunk.abs().max()) < float((t - t.mean()).abs().max())
    # a candidate that wins every comparison stays finite
    sweep = torch.tensor([[0.5, 1.0, 1.0], [0.0, 0.5, 0.7], [0.0, 0.3, 0.5]])
    s = bradley_terry(sweep)
    assert torch.isfinite(s).all() and s.argmax() == 0 and s[1] > s[2]
    assert float(s.sum()) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="square"):
        bradley_terry(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        bradley_terry(torch.tensor([[0.5, 1.5], [0.0, 0.5]]))


def test_group_ranking_uses_all_pairs_in_both_orders_in_one_call() -> None:
    scorer = CountingScorer(SamplerVerdicts(FunctionSampler(_by_number)))
    g = rank_group(scorer, "q", ["answer 3", "answer 1", "answer 2", "answer 9"])
    assert g.ranking == [3, 0, 2, 1]
    assert g.win_rates == pytest.approx([2 / 3, 0.0, 1 / 3, 1.0])
    assert g.judgments == group_cost(4) == 12 and scorer.calls == [(12, 1, True)]
    assert g.p_matrix[3][1] == 1.0 and g.p_matrix[1][3] == 0.0 and g.swap_disagreements == 0
    assert [row[i] for i, row in enumerate(g.p_matrix)] == [0.5] * 4
    assert group_cost(4, k=3) == 36
    # two groups at once (GRPO's batch), and a group of one costs nothing
    both = rank_groups(scorer, [("q1", ["answer 1", "answer 2"]), ("q2", ["answer 5"])], k=2)
    assert scorer.calls[-1] == (2, 2, False)
    assert both[0].ranking == [1, 0] and both[0].judgments == 4
    assert (both[1].scores, both[1].win_rates, both[1].judgments) == ([0.0], [0.5], 0)


def test_group_ranking_on_the_tiny_model_is_batched_and_finite(tiny) -> None:
    model, processor = tiny
    scorer = CountingScorer(ModelVerdicts(model, processor, max_new_tokens=3, batch_size=16))
    g = rank_group(scorer, "How many?", ["one", "two", "three"], images=[IMAGE])
    assert scorer.calls == [(6, 1, True)] and g.judgments == 6
    assert all(math.isfinite(x) for x in g.scores) and sorted(g.ranking) == [0, 1, 2]
    p = torch.tensor(g.p_matrix)
    assert torch.allclose(p + p.T, torch.ones(3, 3, dtype=p.dtype))
