"""Evaluation of a generative reward model: both answer orders, Voting@K, Any-correct@K, reports.

R1-Reward (arXiv 2505.02835, Sec. 4 and Figure 4) scores a judge by the share of preference pairs
on which its ``<answer>`` names the preferred response, greedily and with test-time scaling:
*Voting@K* takes the majority over K sampled judgments, *Any-correct@K* asks whether any of the K
was right (an upper bound for any selection rule).

The released reference scripts always show the chosen response as "Response 1"; a judge that
always answers "1" then scores 100 %. Here every pair can be judged in both orders, and the
report shows the position bias (share of "1" verdicts) and swap consistency beside the accuracy.

Vocabulary used throughout:

``order``
    ``"chosen-first"`` shows the preferred response as Response 1 (the right answer is 1);
    ``"chosen-second"`` shows it as Response 2 (the right answer is 2). ``orders="both"`` judges
    every pair in both; ``"random"`` picks one per pair from a hash of ``(seed, pair id)``;
    ``"chosen-first"`` is the reference layout (kept to expose its bias, not to trust it).
``unit``
    one (pair, order): one prompt. Each unit gets one greedy judgment and ``max(ks)`` samples.
``record``
    one line of ``results.jsonl``: one judgment of one unit (``sample`` is ``"greedy"`` or the
    sample index 0..K-1).
``scoring``
    ``"strict"`` (the rules below; the summary's metric blocks always follow them) or
    ``"official"``, which adds ``summary["official"]``: the numbers each benchmark's own script
    would print for the same greedy verdicts (:mod:`r1reward.scoring`). With
    ``orders="chosen-first"`` those are the paper's protocol and comparable with its tables.
``prompt style``
    ``"paper"`` (Table 1 as printed) or ``"released"`` (the layout ``yifanzhang114/R1-Reward``
    was trained with; :data:`r1reward.prompt.PROMPT_STYLES`).

Metric rules (all fractions in ``[0, 1]``; the Markdown report shows percents):

- an unparseable judgment (no valid ``<answer>``) is *wrong*, and counted (``unparseable``);
- ``voting@K`` uses the first K samples; :func:`vote` takes the majority of parseable answers.
  **Tie rule** (deterministic, counted in ``ties``): the unit's greedy verdict when it is
  parseable, else :func:`hash_verdict` of ``"{pair_id}|{order}"`` (SHA-256, lowest bit). With no
  parseable sample at all the vote is unparseable, hence wrong;
- ``any@K``: at least one of the first K samples is right;
- accuracy is averaged over units (pair x order); ``macro`` is the mean of the per-category
  accuracies; ``acc_plus`` (MM-RLHF-RewardBench) counts a group (``meta["group"]``, the pair
  id family) only when every unit of every pair in it is right;
- ``position_bias``: share of "1" among parseable verdicts (0.5 is unbiased);
- ``swap_consistency``: over pairs judged in both orders, the share whose verdicts name the same
  underlying response in both orders (an unparseable verdict is inconsistent).

Results are append-only and resumable: units are processed in fixed chunks of ``batch_size``
(chunk ``i`` = units ``[i*B, (i+1)*B)`` of the deterministic unit list, sampled with seed
``chunk_seed(seed, i)``), each chunk's lines are written in one write, flushed and fsynced. A rerun
skips every (pair, order, sample) already present and never writes a key twice, so a kill loses at
most the chunk in flight and the final summary equals that of an uninterrupted run. A torn last
line (a kill mid-write) is cut off before appending.

The package, one job per module: :mod:`~r1reward.evaluate.samplers` (who writes judgments),
:mod:`~r1reward.evaluate.voting` (orders, Voting@K, seeds), :mod:`~r1reward.evaluate.media` (a
pair's images and video frames), :mod:`~r1reward.evaluate.store` (the resumable output folder),
:mod:`~r1reward.evaluate.metrics` (the numbers), :mod:`~r1reward.evaluate.report` (the Markdown),
:mod:`~r1reward.evaluate.run` (:func:`judge_pair`, :func:`evaluate`) and
:mod:`~r1reward.evaluate.cli` (``r1reward eval``). Everything public is importable from here.
"""

from r1reward.data.media import read_video_frames
from r1reward.evaluate.cli import build_parser, main
from r1reward.evaluate.metrics import accuracy_vs_k, layout_report, summarize
from r1reward.evaluate.report import PAPER_RESULTS, summary_markdown
from r1reward.evaluate.run import PairJudgment, evaluate, judge_pair
from r1reward.evaluate.samplers import (
    ALWAYS_ONE,
    ConstantSampler,
    FunctionSampler,
    ModelSampler,
    Sampler,
)
from r1reward.evaluate.store import (
    RESULTS_FILE,
    SUMMARY_JSON,
    SUMMARY_MD,
    OutputLocked,
    ResultsStore,
    SettingsMismatch,
    load_records,
    output_lock,
)
from r1reward.evaluate.voting import (
    CHOSEN_FIRST,
    CHOSEN_SECOND,
    GREEDY,
    ORDER_MODES,
    chunk_seed,
    displayed,
    hash_verdict,
    unit_orders,
    vote,
)

__all__ = [
    "ORDER_MODES",
    "CHOSEN_FIRST",
    "CHOSEN_SECOND",
    "GREEDY",
    "ALWAYS_ONE",
    "RESULTS_FILE",
    "SUMMARY_JSON",
    "SUMMARY_MD",
    "Sampler",
    "ConstantSampler",
    "FunctionSampler",
    "ModelSampler",
    "ResultsStore",
    "SettingsMismatch",
    "PairJudgment",
    "vote",
    "hash_verdict",
    "chunk_seed",
    "unit_orders",
    "displayed",
    "judge_pair",
    "evaluate",
    "output_lock",
    "OutputLocked",
    "summarize",
    "load_records",
    "summary_markdown",
    "accuracy_vs_k",
    "layout_report",
    "PAPER_RESULTS",
    "read_video_frames",
    "build_parser",
    "main",
]
