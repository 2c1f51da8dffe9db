"""The judge at work: best-of-N selection and GRPO of a toy policy with the judge as its reward.

A reward model exists to select or train something else (R1-Reward, arXiv 2505.02835, Sec. 1 and
Sec. 4.3's test-time scaling). This module gives the chapter "Using the judge" its machinery:

- a **toy policy**: the profile's tiny Qwen2.5-VL, briefly fine-tuned to answer the toy questions
  with the toy's response sentences (:func:`warm_up_policy`), so it answers imperfectly;
- **best-of-N** (:func:`best_of_n`): N sampled answers per held-out prompt, one picked by the judge
  (Bradley-Terry over its order-averaged pairwise probabilities, :mod:`r1reward.verdicts`), by the
  judge shown one order only, by a scalar Bradley-Terry reward model, by majority vote, at random
  (the expected accuracy) and by the oracle (any right answer among the N);
- **GRPO with three rewards** (:func:`r1reward.chapters.judge_grpo.grpo_compare`): TRL's ``GRPOTrainer`` trains the same policy
  with the same seeds, steps and batch, once per reward (the oracle rule, the judge served by
  ``r1reward serve`` over HTTP, the scalar model), and the policy's true held-out accuracy is
  measured every few steps, beside the reward it was paid and the true accuracy of the very
  samples it was paid for (the reward-hacking signal).

The correctness of an answer is the toy's ground truth: the answer is the toy's response sentence
for the scene's true fact (:func:`correct_answer`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from r1reward.chapters import artifacts
from r1reward.data.schema import PreferencePair
from r1reward.models import load_model
from r1reward.recipes import recipe_hash
from r1reward.rollout import build_batch, completion_logprobs, generate, stop_token_ids
from r1reward.toy.tiny_model import MARKER
from r1reward.toy.world import TOY_VERSION, make_pairs, response_text, true_claim
from r1reward.train.common import freeze_vision
from r1reward.train.scalar import ScalarRewardModel, encode_responses, scalar_inputs, train_scalar
from r1reward.train.sft import load_pairs
from r1reward.verdicts import AS_GIVEN, VerdictScorer, bradley_terry, score_pairs

__all__ = [
    "correct_answer",
    "is_correct",
    "policy_conversation",
    "warm_up_policy",
    "sample_answers",
    "greedy_accuracy",
    "ScalarScorer",
    "best_of_n",
    "served_judge",
]


# ------------------------------------------------------------------------------ the toy task
def correct_answer(pair: PreferencePair) -> str:
    """The toy's response sentence that states the scene's true fact (the policy's target)."""
    truth = pair.meta["truth"]
    return response_text(truth, true_claim(truth))


def is_correct(pair: PreferencePair, answer: str) -> bool:
    """True when ``answer`` (stripped) is exactly :func:`correct_answer` of ``pair``."""
    return answer.strip() == correct_answer(pair)


def policy_conversation(pair: PreferencePair) -> list[dict[str, Any]]:
    """The policy's prompt: the scene image and the toy question as one user turn."""
    content: list[dict[str, Any]] = [{"type": "image", "image": im} for im in pair.images]
    return [{"role": "user", "content": [*content, {"type": "text", "text": pair.question}]}]


def warm_up_policy(
    base: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    pairs: Sequence[PreferencePair],
    *,
    steps: int,
    batch_size: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Fine-tune ``base`` for ``steps`` steps on (image, question) -> correct answer; save it.

    The loss is the mean negative log-likelihood of the answer tokens (end of turn included),
    from :func:`r1reward.rollout.completion_logprobs` over :func:`r1reward.rollout.build_batch`
    rows; the vision tower stays frozen. Few steps on purpose: the policy must answer in the
    toy's sentences but often wrongly, or neither selection nor RL has anything to improve.

    Returns:
        the loss per step (also written to ``out_dir/warmup_log.json``).
    """
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    model, processor = load_model(base)
    freeze_vision(model)
    tok = getattr(processor, "tokenizer", processor)
    stop = stop_token_ids(processor)[0]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    rng = random.Random(seed)
    order = list(range(len(pairs)))
    losses: list[float] = []
    model.train()
    for _ in tqdm(range(steps), desc="policy warm-up", disable=not progress):
        if len(order) < batch_size:
            order = list(range(len(pairs)))
        rng.shuffle(order)
        batch_pairs = [pairs[order.pop()] for _ in range(min(batch_size, len(order)))]
        targets = [
            tok.encode(correct_answer(p), add_special_tokens=False) + [stop] for p in batch_pairs
        ]
        batch, mask = build_batch(processor, [policy_conversation(p) for p in batch_pairs], targets)
        logp = completion_logprobs(model, batch, mask)  # (B, T)
        loss = -(logp * mask).sum() / mask.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
    out = Path(out_dir)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "warmup_log.json").write_text(json.dumps(losses))
    return losses


def sample_answers(
    model: Any,
    processor: Any,
    pairs: Sequence[PreferencePair],
    n: int,
    *,
    greedy: bool = False,
    max_new_tokens: int = 24,
    seed: int = 0,
    batch_size: int = 16,
) -> list[list[str]]:
    """``n`` answers of the policy per pair (temperature 1, or greedy): ``[pair][sample]``."""
    outs = generate(
        model,
        processor,
        [policy_conversation(p) for p in pairs],
        num_return_sequences=n,
        do_sample=not greedy,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        seed=seed,
    )
    return [[c.text.strip() for c in group] for group in outs]


def greedy_accuracy(model: Any, processor: Any, pairs: Sequence[PreferencePair]) -> float:
    """Share of ``pairs`` whose greedy answer is right (the policy's true held-out accuracy)."""
    answers = sample_answers(model, processor, pairs, 1, greedy=True)
    return sum(is_correct(p, a[0]) for p, a in zip(pairs, answers)) / max(1, len(pairs))


# ------------------------------------------------------------------------------ scalar model
class ScalarScorer:
    """A scalar Bradley-Terry reward model (chapter 4's :class:`ScalarRewardModel`) as a scorer
    of single answers: ``score(pairs, answers) -> [r(image, question, answer)]``."""

    def __init__(self, folder: str | os.PathLike[str], batch_size: int = 32) -> None:
        model, self.processor = load_model(Path(folder) / "model")
        hidden = model.config.get_text_config().hidden_size
        self.rm = ScalarRewardModel(model, hidden)
        self.rm.head.load_state_dict(torch.load(Path(folder) / "scalar_head.pt"))
        self.rm.eval()
        self.batch_size = batch_size

    @torch.no_grad()
    def score(self, pairs: Sequence[PreferencePair], answers: Sequence[str]) -> list[float]:
        """One reward per (pair's image and question, answer)."""
        out: list[float] = []
        for i in range(0, len(pairs), self.batch_size):
            rows = [
                dataclasses.replace(p, response_1=a)
                for p, a in zip(pairs[i : i + self.batch_size], answers[i : i + self.batch_size])
            ]
            batch = encode_responses(self.processor, rows, [1] * len(rows))
            batch = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
            batch.pop("mm_token_type_ids", None)
            out += self.rm(**batch).tolist()
        return out


# -------------------------------------------------------------------------------- best-of-N
def _pick(p: torch.Tensor, members: list[int]) -> int:
    """The member with the largest Bradley-Terry strength on the sub-matrix (ties: first)."""
    if len(members) == 1:
        return members[0]
    s = bradley_terry(p[members][:, members])
    return members[int(torch.argmax(s))]


def best_of_n(
    pairs: Sequence[PreferencePair],
    samples: Sequence[Sequence[str]],
    judge: VerdictScorer,
    ns: Sequence[int],
    *,
    scalar: Callable[[Sequence[PreferencePair], Sequence[str]], list[float]] | None = None,
) -> dict[str, Any]:
    """Accuracy of the answer each selector picks among the first N samples, for N in ``ns``.

    Repeated answers are judged once: per prompt the distinct answers among all samples are
    compared pairwise in both orders with one greedy judgment each (``D (D - 1)`` judgments for
    D distinct answers, all prompts in one batched scorer call), giving the order-averaged
    matrix ``P[a, b]`` and the one-order matrix (the as-given judgment only). For each N the
    judge picks the Bradley-Terry winner among the distinct answers of the first N samples.

    Args:
        pairs: the held-out prompts (toy pairs: image, question, ground truth).
        samples: ``[prompt][sample]`` policy answers, at least ``max(ns)`` each.
        judge: the pairwise judge (e.g. :class:`r1reward.verdicts.ModelVerdicts`).
        ns: the N values.
        scalar: scores single answers (e.g. :meth:`ScalarScorer.score`), or ``None``.

    Returns:
        ``{"n": ns, "accuracy": {selector: [acc per N]}, "judgments", "order_gap",
        "swap_flip_rate", "pairs_judged"}``; selectors ``random`` (expected), ``majority``,
        ``judge``, ``judge_one_order``, ``scalar`` (when given), ``oracle``. ``order_gap`` is the
        mean ``|P_as_given - P_swapped|`` over the judged answer pairs, ``swap_flip_rate`` the
        share whose winner changes with the order.
    """
    if len(samples) != len(pairs):
        raise ValueError(f"best_of_n: {len(pairs)} prompts but {len(samples)} sample lists")
    top = max(ns)
    for i, s in enumerate(samples):
        if len(s) < top:
            raise ValueError(f"best_of_n: prompt {i} ({pairs[i].id}) has {len(s)} samples, N={top}")
    distinct = [list(dict.fromkeys(s[:top])) for s in samples]
    jobs = [
        (i, a, b)
        for i, d in enumerate(distinct)
        for a in range(len(d))
        for b in range(a + 1, len(d))
    ]
    scored = score_pairs(
        judge,
        [(pairs[i].question, distinct[i][a], distinct[i][b]) for i, a, b in jobs],
        images=[pairs[i].images for i, _, _ in jobs],
        k=1,
    )
    avg = [torch.full((len(d), len(d)), 0.5, dtype=torch.float64) for d in distinct]
    one = [m.clone() for m in avg]
    gaps, flips = [], 0
    for (i, a, b), s in zip(jobs, scored):
        avg[i][a, b], avg[i][b, a] = s.score, 1 - s.score
        p = s.p_1_orders[AS_GIVEN]
        one[i][a, b], one[i][b, a] = p, 1 - p
        gaps.append(s.order_gap or 0.0)
        flips += (s.p_1_orders[AS_GIVEN] - 0.5) * (s.p_1_orders["swapped"] - 0.5) < 0
    right = [[is_correct(p, a) for a in d] for p, d in zip(pairs, distinct)]
    scalar_scores: list[list[float]] = []
    if scalar is not None:
        flat = [(i, a) for i, d in enumerate(distinct) for a in d]
        values = iter(scalar([pairs[i] for i, _ in flat], [a for _, a in flat]))
        scalar_scores = [[next(values) for _ in d] for d in distinct]
    acc: dict[str, list[float]] = {
        k: [] for k in ("random", "majority", "judge", "judge_one_order", "oracle")
    }
    if scalar is not None:
        acc["scalar"] = []
    for n in ns:
        tally = dict.fromkeys(acc, 0.0)
        for i, s in enumerate(samples):
            idx = [distinct[i].index(x) for x in s[:n]]
            members = sorted(set(idx))
            tally["random"] += sum(right[i][j] for j in idx) / n
            tally["majority"] += right[i][max(members, key=lambda j: (idx.count(j), -j))]
            tally["judge"] += right[i][_pick(avg[i], members)]
            tally["judge_one_order"] += right[i][_pick(one[i], members)]
            tally["oracle"] += any(right[i][j] for j in members)
            if scalar is not None:
                tally["scalar"] += right[i][max(members, key=lambda j: (scalar_scores[i][j], -j))]
        for k in acc:
            acc[k].append(tally[k] / len(samples))
    return {
        "n": list(ns),
        "accuracy": acc,
        "judgments": 2 * len(jobs),
        "pairs_judged": len(jobs),
        "order_gap": sum(gaps) / max(1, len(gaps)),
        "swap_flip_rate": flips / max(1, len(jobs)),
        "distinct_mean": sum(len(d) for d in distinct) / max(1, len(distinct)),
    }


# ----------------------------------------------------------------------------- the service
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served_judge(
    model: str | os.PathLike[str],
    *,
    reward_max_tokens: int,
    log_path: str | os.PathLike[str],
    start_timeout: float = 600.0,
    extra_args: Sequence[str] = (),
) -> Iterator[str]:
    """Run ``r1reward serve --model MODEL`` as a subprocess on a free 127.0.0.1 port; yield its
    URL once ``/health`` answers; stop it on exit. ``extra_args`` go on its command line (e.g.
    ``["--threads", "1", "--max-k", "4"]``).

    Raises:
        RuntimeError: when the server exits or does not answer in ``start_timeout`` seconds
            (with the end of its log).
    """
    import httpx

    port = _free_port()
    repo = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])}
    cmd = [
        sys.executable,
        "-m",
        "r1reward.cli",
        "serve",
        "--model",
        str(model),
        "--port",
        str(port),
        "--reward-max-tokens",
        str(reward_max_tokens),
        "--log-level",
        "warning",
        *extra_args,
    ]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = Path(log_path).read_text()[-1500:]
                raise RuntimeError(f"r1reward serve ({log_path}) did not start: {tail}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def policy_model(
    profile: str,
    *,
    steps: int,
    batch_size: int = 16,
    lr: float = 1e-3,
    train_pairs: int = 2000,
    seed: int = 0,
) -> Path:
    """The warmed-up toy policy of ``profile`` (:func:`warm_up_policy` from the profile's tiny
    model on its first ``train_pairs`` toy train pairs), cached in ``artifacts/<profile>``."""
    tiny = artifacts.tiny_model(profile)
    settings = {
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "train_pairs": train_pairs,
        "seed": seed,
    }
    key = recipe_hash(settings, json.loads((tiny / MARKER).read_text()), TOY_VERSION)
    folder = artifacts.artifacts_dir(profile) / f"policy-{key}"
    pairs = make_pairs(train_pairs, seed=seed + 1000, split="train")
    return artifacts._cached(
        folder,
        key,
        lambda out: warm_up_policy(
            tiny, out, pairs, steps=steps, batch_size=batch_size, lr=lr, seed=seed
        ),
    )


def scalar_model(profile: str, *, train_pairs: int) -> Path:
    """A scalar Bradley-Terry reward model that keeps its backbone (chapter 4's recipe, one
    epoch over the first ``train_pairs`` train pairs), cached in ``artifacts/<profile>``."""
    base = artifacts.recipe_for(profile)
    recipe = artifacts.recipe_for(profile, artifacts._model_overrides(profile, base))
    recipe["scalar"] = {**recipe["scalar"], "epochs": 1}
    key = recipe_hash(
        recipe["model"],
        recipe["data"],
        recipe["scalar"],
        train_pairs,
        artifacts._tiny_build_info(profile, base),
    )
    folder = artifacts.artifacts_dir(profile) / f"scalar-model-{key}"
    pairs = load_pairs(recipe["data"], "train")[:train_pairs]
    heldout = artifacts.heldout_pairs(profile)

    def build(out: Path) -> None:
        inputs = scalar_inputs(recipe, pairs=pairs, heldout=heldout)
        result = train_scalar(**inputs, out_dir=out, progress=True, save_model=True)
        (out / "scalar_result.json").write_text(json.dumps(result))

    return artifacts._cached(folder, key, build)


def cached_result(
    profile: str, name: str, settings: dict[str, Any], run: Callable[[Path], dict[str, Any]]
) -> dict[str, Any]:
    """``run(folder)``'s JSON result, computed once per ``settings`` and cached in
    ``artifacts/<profile>/<name>-<hash>/result.json`` (rebuilt when a setting changes)."""
    key = recipe_hash(settings)
    folder = artifacts.artifacts_dir(profile) / f"{name}-{key}"

    def build(out: Path) -> None:
        (out / "result.json").write_text(json.dumps(run(out)))

    artifacts._cached(folder, key, build)
    return json.loads((folder / "result.json").read_text())
