"""Scalar rewards from a pairwise judge: the verdict distribution, both orders, groups.

R1-Reward (arXiv 2505.02835, Sec. 3, Table 1) answers "1" or "2". A GRPO/PPO trainer needs a
number per sample, and a sampled verdict gives none when its text does not parse. This module
reads the number from the judge itself:

``P(1 better)``
    After the judge has written its analysis (sampled or greedy, exactly as in evaluation), the
    canonical ending ``<think>{analysis}</think><answer>`` is teacher-forced and the next-token
    logits of ``"1"`` and ``"2"`` are read: ``p_first = softmax([l_1, l_2])[0]``. Every judgment
    yields a number, also when the sampled text would not parse (a cut analysis is closed with
    ``</think>``). ``verdict_mass`` = ``P("1") + P("2")`` under the full softmax says how much of
    the model's probability the two verdicts hold (near 1 for a trained judge). The parsed votes
    are kept beside it as the second estimate (Voting@K, paper Sec. 4.3).
both orders
    ``P(A > B) = (p_first(A, B) + 1 - p_first(B, A)) / 2``: the answer order's effect cancels to
    first order. ``order_gap = |p_first(A, B) - (1 - p_first(B, A))|`` is reported per pair and
    ``swap_disagreement`` flags a gap above a threshold (default 0.5).
pointwise
    ``P(candidate > reference)``: a pair with the reference in the second slot, in both orders.
group ranking
    G candidates of one prompt: all ``G (G - 1)`` ordered pairs in one batched call (each
    unordered pair in both orders), the pairwise matrix ``P[i, j] = P(i > j)``, the win rate
    ``mean_j P[i, j]`` and a Bradley-Terry fit ``P[i, j] ~ sigmoid(s_i - s_j)``
    (:func:`bradley_terry`). Cost: ``G (G - 1)`` judgments (times ``k`` when sampling), each one
    generation and one teacher-forced forward pass.

A *scorer* is anything with ``judge(conversations, k=, greedy=, seed=) -> list[list[Verdict]]``
(one list per conversation: one greedy judgment, or ``k`` samples). The scorers themselves
(:class:`ModelVerdicts` for a Qwen2.5-VL-style model, :class:`SamplerVerdicts` for a text-only
sampler, :class:`BatchedVerdicts` for the service's shared batches) live in
:mod:`r1reward.verdict_scorers` and are importable from here too; this module turns their
verdicts into scores of pairs, references and groups.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from r1reward.evaluate import vote
from r1reward.prompt import build_messages, parse_judgment
from r1reward.verdict_scorers import (
    BatchedVerdicts,
    ModelVerdicts,
    SamplerVerdicts,
    Verdict,
    VerdictScorer,
    forced_prefix,
    verdict_probabilities,
    verdict_scorer,
    verdict_token_ids,
)

__all__ = [
    "AS_GIVEN",
    "SWAPPED",
    "Verdict",
    "VerdictScorer",
    "ModelVerdicts",
    "SamplerVerdicts",
    "BatchedVerdicts",
    "verdict_scorer",
    "verdict_token_ids",
    "forced_prefix",
    "verdict_probabilities",
    "PairScore",
    "GroupScore",
    "score_pairs",
    "score_pair",
    "score_reference",
    "rank_group",
    "rank_groups",
    "group_cost",
    "bradley_terry",
]

AS_GIVEN = "as-given"
SWAPPED = "swapped"
DEFAULT_GAP_THRESHOLD = 0.5


# --------------------------------------------------------------------------------- pairs
@dataclass
class PairScore:
    """The judge's view of one pair, in the caller's positions (1 = ``response_1``).

    Attributes:
        score: P(response_1 better) from the verdict distribution, averaged over the ``k``
            judgments of each order and then over the orders. Never null.
        p_1_orders: that probability per order (``"as-given"``; ``"swapped"`` mapped back).
        order_gap: ``|p_as_given - p_swapped|`` (``None`` when judged in one order).
        swap_disagreement: ``order_gap > threshold``.
        preferred, tie, p_1, votes: the sampled votes (majority, tie, share of parseable votes
            for response_1 or ``None``, counts) -- the second estimate.
        answers, orders, p_first, analyses, texts: per judgment, in the caller's positions
            (``p_first`` mapped back: P(response_1 better) according to that judgment).
        well_formed_rate, verdict_mass: share in the exact Table-1 format; mean P("1") + P("2").
    """

    score: float
    p_1_orders: dict[str, float]
    order_gap: float | None
    swap_disagreement: bool
    preferred: int | None
    tie: bool
    p_1: float | None
    votes: dict[str, int]
    answers: list[int | None]
    orders: list[str]
    p_first: list[float]
    analyses: list[str]
    texts: list[str]
    well_formed_rate: float
    verdict_mass: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _pair_score(
    per_order: Sequence[tuple[str, list[Verdict]]], threshold: float = DEFAULT_GAP_THRESHOLD
) -> PairScore:
    answers: list[int | None] = []
    orders: list[str] = []
    p_first: list[float] = []
    analyses: list[str] = []
    texts: list[str] = []
    masses: list[float] = []
    n_well = 0
    by_order: dict[str, float] = {}
    for order, verdicts in per_order:
        if not verdicts:
            raise ValueError(f"no judgment returned for order {order!r}")
        mapped = []
        for v in verdicts:
            swapped = order == SWAPPED
            ans = v.answer if (v.answer is None or not swapped) else 3 - v.answer
            p = 1.0 - v.p_first if swapped else v.p_first
            if not math.isfinite(p):
                raise ValueError(f"non-finite verdict probability {p!r} for order {order!r}")
            answers.append(ans)
            orders.append(order)
            p_first.append(p)
            analyses.append(parse_judgment(v.text).analysis)
            texts.append(v.text)
            masses.append(v.verdict_mass)
            n_well += int(v.well_formed)
            mapped.append(p)
        by_order[order] = _mean(mapped)
    gap = abs(by_order[AS_GIVEN] - by_order[SWAPPED]) if len(by_order) == 2 else None
    verdict, tie = vote(answers)
    n1, n2 = answers.count(1), answers.count(2)
    return PairScore(
        score=_mean(list(by_order.values())),
        p_1_orders=by_order,
        order_gap=gap,
        swap_disagreement=gap is not None and gap > threshold,
        preferred=verdict,
        tie=tie,
        p_1=(n1 / (n1 + n2)) if n1 + n2 else None,
        votes={"1": n1, "2": n2, "unparseable": len(answers) - n1 - n2},
        answers=answers,
        orders=orders,
        p_first=p_first,
        analyses=analyses,
        texts=texts,
        well_formed_rate=n_well / len(texts),
        verdict_mass=_mean(masses),
    )


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")


def score_pairs(
    scorer: VerdictScorer,
    pairs: Sequence[tuple[str, str, str]],
    *,
    images: Sequence[Sequence[Any]] | None = None,
    k: int = 1,
    both_orders: bool = True,
    greedy: bool | None = None,
    seed: int | None = None,
    threshold: float = DEFAULT_GAP_THRESHOLD,
) -> list[PairScore]:
    """Score many ``(question, response_1, response_2)`` pairs in one scorer call.

    Each pair is shown as given and (with ``both_orders``) swapped: ``len(pairs) * 2``
    conversations in a single ``scorer.judge`` call, so a model scorer batches them together.
    ``greedy`` defaults to ``k == 1``. ``images[i]`` are the images of pair ``i``.
    """
    _check_k(k)
    if images is not None and len(images) != len(pairs):
        raise ValueError(f"score_pairs: {len(pairs)} pairs but {len(images)} image lists")
    use_greedy = (k == 1) if greedy is None else bool(greedy)
    layouts = [(AS_GIVEN, False)] + ([(SWAPPED, True)] if both_orders else [])
    convs = []
    for i, (question, r1, r2) in enumerate(pairs):
        imgs = list(images[i]) if images is not None else []
        for _, swap in layouts:
            a, b = (r2, r1) if swap else (r1, r2)
            convs.append(build_messages(question, a, b, images=imgs))
    if not convs:
        return []
    verdicts = scorer.judge(convs, k=k, greedy=use_greedy, seed=seed)
    if len(verdicts) != len(convs):
        raise RuntimeError(f"scorer returned {len(verdicts)} results for {len(convs)} prompts")
    n = len(layouts)
    return [
        _pair_score([(name, verdicts[i * n + j]) for j, (name, _) in enumerate(layouts)], threshold)
        for i in range(len(pairs))
    ]


def score_pair(
    scorer: VerdictScorer,
    question: str,
    response_1: str,
    response_2: str,
    *,
    images: Sequence[Any] = (),
    **kwargs: Any,
) -> PairScore:
    """One pair: :func:`score_pairs` of one. ``score`` = P(response_1 better)."""
    return score_pairs(
        scorer, [(question, response_1, response_2)], images=[list(images)], **kwargs
    )[0]


def score_reference(
    scorer: VerdictScorer,
    question: str,
    candidates: Sequence[str],
    reference: str | Sequence[str],
    *,
    images: Sequence[Any] = (),
    **kwargs: Any,
) -> list[PairScore]:
    """Pointwise: P(candidate > reference) for each candidate, in both orders, one scorer call.

    ``reference`` is one string for all candidates or one per candidate. The candidate is
    ``response_1``, so each ``score`` reads directly as P(candidate better than reference).
    """
    refs = [reference] * len(candidates) if isinstance(reference, str) else list(reference)
    if len(refs) != len(candidates):
        raise ValueError(
            f"score_reference: {len(candidates)} candidates but {len(refs)} references"
        )
    pairs = [(question, c, r) for c, r in zip(candidates, refs)]
    return score_pairs(scorer, pairs, images=[list(images)] * len(pairs), **kwargs)


# --------------------------------------------------------------------------------- groups
def bradley_terry(
    p: torch.Tensor | Sequence[Sequence[float]], *, l2: float = 1e-2, iters: int = 50
) -> torch.Tensor:
    """Bradley-Terry strengths from soft pairwise outcomes, by Newton's method.

    Maximises ``sum_{i != j} P[i, j] log sigmoid(s_i - s_j) - l2/2 |s|^2`` (a concave objective;
    the small ridge keeps the strengths finite when a candidate wins every comparison) and
    returns ``s`` centred to mean 0. For ``P[i, j] = sigmoid(t_i - t_j)`` it recovers ``t`` up to
    the ridge's shrinkage.

    Args:
        p: ``(G, G)`` with ``P[i, j]`` the probability that ``i`` beats ``j``; the diagonal is
            ignored; ``P[i, j] + P[j, i]`` need not be 1 (each is its own soft observation).
        l2: ridge strength (> 0).
        iters: Newton steps at most (stops when the step is below 1e-10).

    Returns:
        ``(G,)`` float64 strengths in logit units, mean 0.
    """
    p = torch.as_tensor(p, dtype=torch.float64)
    if p.ndim != 2 or p.shape[0] != p.shape[1]:
        raise ValueError(f"bradley_terry: expected a square (G, G) matrix, got {tuple(p.shape)}")
    if not l2 > 0:
        raise ValueError(f"bradley_terry: l2 must be > 0, got {l2}")
    g = p.shape[0]
    off = 1.0 - torch.eye(g, dtype=torch.float64)
    w = p * off  # observed wins of i over j
    if not torch.isfinite(w).all() or (w < 0).any() or (w > 1).any():
        raise ValueError("bradley_terry: probabilities must be finite and in [0, 1]")
    n = (w + w.T) * off  # soft comparisons between i and j
    s = torch.zeros(g, dtype=torch.float64)
    for _ in range(iters):
        sig = torch.sigmoid(s[:, None] - s[None, :])  # (G, G) model P(i beats j)
        grad = (w - n * sig).sum(1) - l2 * s
        curv = n * sig * (1 - sig)  # (G, G)
        hess = torch.diag(curv.sum(1) + l2) - curv  # negative Hessian, positive definite
        step = torch.linalg.solve(hess, grad)
        s = s + step
        if step.abs().max() < 1e-10:
            break
    return s - s.mean()


def group_cost(g: int, k: int = 1, greedy: bool | None = None) -> int:
    """Judgments :func:`rank_group` makes for ``g`` candidates: ``g (g - 1)``, times ``k`` when
    sampling (each a generation plus one teacher-forced forward pass)."""
    use_greedy = (k == 1) if greedy is None else bool(greedy)
    return g * (g - 1) * (1 if use_greedy else k)


@dataclass
class GroupScore:
    """Ranking of G candidates for one prompt.

    Attributes:
        scores: Bradley-Terry strengths ``(G,)`` (logit units, mean 0; :func:`bradley_terry`).
        win_rates: ``mean_{j != i} P[i, j]`` per candidate (0.5 for a group of one).
        ranking: candidate indices, best first (by strength, ties by index).
        p_matrix: ``P[i][j]`` = P(i better than j), order-averaged (0.5 on the diagonal).
        gap_matrix: the order gap of each unordered pair (symmetric, 0 on the diagonal).
        swap_disagreements: unordered pairs whose gap exceeds the threshold.
        judgments: judgments made (:func:`group_cost`).
        well_formed_rate, verdict_mass: over all judgments.
    """

    scores: list[float]
    win_rates: list[float]
    ranking: list[int]
    p_matrix: list[list[float]]
    gap_matrix: list[list[float]]
    swap_disagreements: int
    judgments: int
    well_formed_rate: float
    verdict_mass: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rank_groups(
    scorer: VerdictScorer,
    groups: Sequence[tuple[str, Sequence[str]]],
    *,
    images: Sequence[Sequence[Any]] | None = None,
    k: int = 1,
    greedy: bool | None = None,
    seed: int | None = None,
    threshold: float = DEFAULT_GAP_THRESHOLD,
    l2: float = 1e-2,
) -> list[GroupScore]:
    """Rank several groups ``(question, candidates)`` with all their pairs in one scorer call.

    Each unordered pair ``{i, j}`` of a group is judged as ``(i, j)`` and ``(j, i)``;
    ``P[i, j] = (p_first(i, j) + 1 - p_first(j, i)) / 2``. Cost: :func:`group_cost` per group.
    """
    _check_k(k)
    if images is not None and len(images) != len(groups):
        raise ValueError(f"rank_groups: {len(groups)} groups but {len(images)} image lists")
    pairs, index = [], []
    pair_images: list[list[Any]] = []
    for gi, (question, cands) in enumerate(groups):
        imgs = list(images[gi]) if images is not None else []
        for i in range(len(cands)):
            for j in range(i + 1, len(cands)):
                pairs.append((question, cands[i], cands[j]))
                pair_images.append(imgs)
                index.append((gi, i, j))
    scored = score_pairs(
        scorer,
        pairs,
        images=pair_images,
        k=k,
        both_orders=True,
        greedy=greedy,
        seed=seed,
        threshold=threshold,
    )
    out = []
    for gi, (_, cands) in enumerate(groups):
        g = len(cands)
        p = torch.full((g, g), 0.5, dtype=torch.float64)
        gap = torch.zeros((g, g), dtype=torch.float64)
        mine = [(i, j, s) for (h, i, j), s in zip(index, scored) if h == gi]
        for i, j, s in mine:
            p[i, j], p[j, i] = s.score, 1.0 - s.score
            gap[i, j] = gap[j, i] = float(s.order_gap or 0.0)
        strengths = bradley_terry(p, l2=l2) if g > 1 else torch.zeros(g, dtype=torch.float64)
        wins = (p.sum(1) - 0.5) / (g - 1) if g > 1 else torch.full((g,), 0.5)
        n_judged = sum(len(s.texts) for _, _, s in mine)
        out.append(
            GroupScore(
                scores=strengths.tolist(),
                win_rates=wins.tolist(),
                ranking=sorted(range(g), key=lambda c: (-float(strengths[c]), c)),
                p_matrix=p.tolist(),
                gap_matrix=gap.tolist(),
                swap_disagreements=sum(int(s.swap_disagreement) for _, _, s in mine),
                judgments=n_judged,
                well_formed_rate=(
                    sum(s.well_formed_rate * len(s.texts) for _, _, s in mine) / n_judged
                    if n_judged
                    else 0.0
                ),
                verdict_mass=(
                    sum(s.verdict_mass * len(s.texts) for _, _, s in mine) / n_judged
                    if n_judged
                    else 0.0
                ),
            )
        )
    return out


def rank_group(
    scorer: VerdictScorer,
    question: str,
    candidates: Sequence[str],
    *,
    images: Sequence[Any] = (),
    **kwargs: Any,
) -> GroupScore:
    """Rank the G ``candidates`` of one prompt: :func:`rank_groups` of one group."""
    return rank_groups(scorer, [(question, candidates)], images=[list(images)], **kwargs)[0]
