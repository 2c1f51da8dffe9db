"""StableReinforce (with Reinforce++ and GRPO beside it): the RL trainer of R1-Reward, on accelerate.

Paper: *R1-Reward* (arXiv 2505.02835), Section 3 (StableReinforce) and Section 4.1 (training).
The maths lives in :mod:`r1reward.algorithms`; this file is the machinery around it and reads top
to bottom like a CleanRL script. One RL step is:

1. **rollout** -- take the next batch of preference pairs (each process its own slice), build the
   Table-1 chat messages with the images, and sample ``samples_per_prompt`` answers per prompt
   with :func:`r1reward.rollout.generate`;
2. **rewards** -- format, result and (StableReinforce) consistency through a :class:`Judge`,
   combined as ``Result * (1 + 0.5 * Consistency) + 0.5 * Format`` (Eq. 5-7);
3. **old and reference log-probs** of the sampled tokens under the policy before the update and
   under the frozen reference (skipped when ``kl_coef == 0``);
4. **returns** with the token-level KL penalty inside the reward (:func:`algorithms.token_rewards`,
   Reinforce++), or GRPO's per-group advantages;
5. **advantages** normalised over the *whole* batch across all processes (all-gather, then one
   call to :func:`algorithms.normalize_advantages`), with the Advantage Filter (``|A| > 3`` -> 0);
6. **policy loss** with Pre-Clip (:func:`algorithms.policy_loss`), ``ppo_epochs`` passes over the
   batch in mini-batches, gradient accumulation over micro-batches, gradient clipping.

``--algo`` picks a preset; ``pre_clip``, ``advantage_filter`` and ``consistency_reward`` override
the preset one at a time for the ablations of Table 6.

Entry points: :func:`train_rl` (notebooks) and :func:`main` (``r1reward rl --recipe NAME``, or
``accelerate launch -m r1reward.train.rl --recipe NAME`` for several processes).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from r1reward.rollout import eval_mode, frozen_vision_cache
from r1reward.train.common import freeze_vision, preflight

# --------------------------------------------------------------------------------------------
# 0. Configuration: the `rl:` section of a recipe
# --------------------------------------------------------------------------------------------

#: What each algorithm means. ``None`` in :class:`RLConfig` takes the value from here.
ALGO_PRESETS: dict[str, dict[str, Any]] = {
    # Section 3: Pre-Clip + Advantage Filter + consistency reward, one sample per prompt,
    # batch-normalised Reinforce++ returns with the KL inside the reward.
    "stable-reinforce": dict(
        pre_clip=True, advantage_filter=True, consistency_reward=True, samples_per_prompt=1,
        advantage="batch", kl_in="reward",
    ),
    # Reinforce++ (Hu et al. 2025) as the paper's baseline: same returns and normalisation, plain
    # exp(log-ratio), no filter, no consistency reward.
    "reinforce++": dict(
        pre_clip=False, advantage_filter=False, consistency_reward=False, samples_per_prompt=1,
        advantage="batch", kl_in="reward",
    ),
    # GRPO (Shao et al. 2024): group-normalised sequence advantages, KL (k3) in the loss.
    "grpo": dict(
        pre_clip=False, advantage_filter=False, consistency_reward=False, samples_per_prompt=4,
        advantage="group", kl_in="loss",
    ),
    # Later fixes of the same instabilities, on GRPO's groups (r1reward.algorithms, "later fixes"):
    # Dr. GRPO (Liu et al. 2025): advantages not divided by the group std, no 1/|o| per sequence.
    "dr-grpo": dict(
        pre_clip=False, advantage_filter=False, consistency_reward=False, samples_per_prompt=4,
        advantage="group-mean", kl_in="loss", length_norm=False,
    ),
    # DAPO's clip-higher (Yu et al. 2025): the upper PPO clip at 1.28, the lower at 0.8.
    "dapo-clip-higher": dict(
        pre_clip=False, advantage_filter=False, consistency_reward=False, samples_per_prompt=4,
        advantage="group", kl_in="loss", clip_eps_high=0.28,
    ),
    # GSPO (Zheng et al. 2025): one clipped, length-normalised importance ratio per sequence.
    "gspo": dict(
        pre_clip=False, advantage_filter=False, consistency_reward=False, samples_per_prompt=4,
        advantage="group", kl_in="loss", loss="gspo",
    ),
    # CISPO (MiniMax-M1 2025): clipped, stop-gradient importance weights on every token.
    "cispo": dict(
        pre_clip=False, advantage_filter=False, consistency_reward=False, samples_per_prompt=4,
        advantage="group", kl_in="loss", loss="cispo", clip_eps_high=0.28,
    ),
}
#: What a preset leaves out: PPO's token loss, each sequence averaged over its tokens, symmetric clip.
PRESET_DEFAULTS: dict[str, Any] = {"loss": "ppo", "length_norm": True, "clip_eps_high": None}


def default_kl_kind(algo: str) -> str:
    """The KL estimator where the preset puts the KL: ``k1`` in Reinforce++'s per-token reward
    (unbiased; its sign carries the penalty), ``k3`` in GRPO's loss (non-negative, low variance,
    Shao et al. 2024)."""
    return "k1" if ALGO_PRESETS[algo]["kl_in"] == "reward" else "k3"


@dataclass
class RLConfig:
    """All knobs of the trainer (the ``rl:`` recipe section). Sizes are *per process*."""

    algo: str = "stable-reinforce"
    init_model: str | None = None  # model folder or hub id; None -> recipe["model"]["path"]
    steps: int = 20
    prompts_per_step: int = 8  # prompts per process per RL step
    samples_per_prompt: int | None = None  # None -> preset (1 for the Reinforce family)
    mini_batch_size: int = 4  # samples per optimizer update (per process)
    micro_batch_size: int = 2  # samples per forward/backward (per process)
    ppo_epochs: int = 2
    lr: float = 1e-5
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float = 1.0
    clip_eps: float = 0.2
    clip_eps_high: float | None = None  # None -> preset (DAPO/CISPO: 0.28; else symmetric clip_eps)
    loss: str | None = None  # None -> preset: "ppo" (token-level, Pre-Clip-able), "gspo", "cispo"
    length_norm: bool | None = None  # None -> preset; False: Dr. GRPO's constant normaliser
    pre_clip: bool | None = None
    pre_clip_low: float = 1e-3  # ratio bounds of Pre-Clip, applied to the log-ratio
    pre_clip_high: float = 1e3
    advantage_filter: bool | None = None
    filter_sigma: float = 3.0
    consistency_reward: bool | None = None
    judge: str | dict = "rule"  # "rule" (toy) | {kind: openai|transformers, ...} (r1reward.judges)
    kl_coef: float = 0.0
    # the KL estimator where the KL enters (reward or loss) and in the log; None -> preset
    # (default_kl_kind: k1 in the Reinforce family's reward, k3 in GRPO's loss)
    kl_kind: str | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    rollout_batch_size: int = 8  # prompts per generate() call
    # "transformers" (generate), "vllm" (colocated engine with weight sync, r1reward.rollout_vllm;
    # CUDA + the vllm package) or "auto" (vLLM when importable and the policy is on CUDA)
    engine: str = "transformers"
    vllm: dict | None = None  # extra vllm.LLM arguments, e.g. {gpu_memory_utilization: 0.3}
    # where the old policy's log-probs come from: "sampler" -- recorded while sampling (no extra
    # forward pass; the transformers engine, else it falls back to "trainer"); "trainer" -- a
    # no-grad forward pass over the samples (the first mini-batch's taken lazily, as TRL does)
    old_logprobs: str = "sampler"
    # data
    data: dict | None = None  # None -> the recipe's `data` section (toy train split or a file)
    min_difficulty: int | None = None  # keep pairs with difficulty >= this (the "hard" subset)
    swap_prob: float = 0.5  # present each pair in the swapped order with this probability
    both_orders: bool = False  # each step: prompts_per_step / 2 pairs, each in both orders
    # model
    lora: dict | None = None  # None -> model.lora of the recipe (peft LoRA settings)
    quantization: str | None = None  # None -> model.quantization ("4bit": bitsandbytes QLoRA)
    gradient_checkpointing: bool = False
    dtype: str | None = None  # None -> model.dtype
    freeze_vision: bool = True  # train the language model on frozen visual features (as SFT does)
    # run
    seed: int = 0
    save_every: int = 0  # 0 -> only at the end
    save_total_limit: int = 2
    report_to: list[str] = field(default_factory=list)  # accelerate trackers: tensorboard, wandb
    stop_on_nonfinite: bool = True  # a model with NaN weights cannot sample: stop and say so
    # stop once this many steps in a row were collapsed (collapse_reason); 0: never stop for it
    stop_on_collapse: int = 0
    collapse_min_well_formed: float = 0.5  # a step with fewer well-formed samples is collapsed
    collapse_length_fraction: float = 0.9  # ... or one whose mean length reaches this x max_new_tokens
    progress: bool = True

    # ---- resolved views --------------------------------------------------------------------
    def resolved(self) -> RLConfig:
        """Fill every ``None`` switch from the algorithm preset and check the sizes."""
        if self.algo not in ALGO_PRESETS:
            raise ValueError(f"rl.algo={self.algo!r}: expected one of {sorted(ALGO_PRESETS)}")
        preset = ALGO_PRESETS[self.algo]
        out = dataclasses.replace(self)
        for key in ("pre_clip", "advantage_filter", "consistency_reward", "samples_per_prompt"):
            if getattr(out, key) is None:
                setattr(out, key, preset[key])
        for key in ("loss", "length_norm", "clip_eps_high"):
            if getattr(out, key) is None:
                setattr(out, key, preset.get(key, PRESET_DEFAULTS[key]))
        if out.kl_kind is None:
            out.kl_kind = default_kl_kind(out.algo)
        if out.kl_kind not in ("k1", "k2", "k3"):
            raise ValueError(f"rl.kl_kind={out.kl_kind!r}: expected 'k1', 'k2' or 'k3'")
        if out.loss not in ("ppo", "gspo", "cispo"):
            raise ValueError(f"rl.loss={out.loss!r}: expected 'ppo', 'gspo' or 'cispo'")
        n = out.prompts_per_step * out.samples_per_prompt
        if out.mini_batch_size % out.micro_batch_size or n % out.mini_batch_size:
            raise ValueError(
                f"rl: samples per step ({out.prompts_per_step} prompts x {out.samples_per_prompt}"
                f" = {n}) must be a multiple of mini_batch_size={out.mini_batch_size}, itself a"
                f" multiple of micro_batch_size={out.micro_batch_size}"
            )
        if out.both_orders and out.prompts_per_step % 2:
            raise ValueError(
                f"rl.both_orders needs an even prompts_per_step, got {out.prompts_per_step}"
            )
        if out.engine not in ("transformers", "vllm", "auto"):
            raise ValueError(
                f"rl.engine={out.engine!r}: expected 'transformers', 'vllm' or 'auto'"
            )
        if out.old_logprobs not in ("sampler", "trainer"):
            raise ValueError(f"rl.old_logprobs={out.old_logprobs!r}: expected 'sampler' or 'trainer'")
        if out.vllm is not None and not isinstance(out.vllm, dict):
            raise ValueError(f"rl.vllm={out.vllm!r}: expected a mapping of vllm.LLM arguments")
        if preset["advantage"] != "batch" and out.samples_per_prompt < 2:
            raise ValueError(f"rl.samples_per_prompt must be >= 2 for {self.algo} (group statistics)")
        return out

    @property
    def pairs_per_step(self) -> int:
        """Distinct pairs a process reads per step (half the prompts with ``both_orders``)."""
        return self.prompts_per_step // 2 if self.both_orders else self.prompts_per_step

    @property
    def samples_per_step(self) -> int:
        return self.prompts_per_step * int(self.samples_per_prompt or 1)

    @property
    def grad_accum(self) -> int:
        return self.mini_batch_size // self.micro_batch_size

    @property
    def pre_clip_bounds(self) -> tuple[float, float] | None:
        return (math.log(self.pre_clip_low), math.log(self.pre_clip_high)) if self.pre_clip else None

    @classmethod
    def from_dict(cls, section: dict | None) -> RLConfig:
        section = dict(section or {})
        from r1reward.recipes import check_section

        check_section(cls, section, "rl")
        if "adam_betas" in section:
            section["adam_betas"] = tuple(section["adam_betas"])
        if isinstance(section.get("report_to"), str):
            section["report_to"] = [section["report_to"]] if section["report_to"] != "none" else []
        return cls(**section)


# --------------------------------------------------------------------------------------------
# 1. Data: a deterministic stream of pairs, sliced per process
# --------------------------------------------------------------------------------------------


def load_pairs(cfg: RLConfig, recipe: dict) -> list:
    """The RL training pairs: ``rl.data`` or else the recipe's ``data`` section -- the toy
    train split (``source: toy``, ``train_pairs``, ``seed``, ``image_size``) or a pairs file
    (``source: PATH``, any format :func:`r1reward.data.load` reads) -- filtered to the hard
    subset with ``rl.min_difficulty`` (Section 4.1: RL only on pairs the teacher found hard)."""
    spec = dict(cfg.data or recipe.get("data") or {"source": "toy"})
    source = str(spec.get("source", "toy"))
    if source == "toy":
        from r1reward.data.toy import make_pairs

        n = int(spec.get("train_pairs", spec.get("n", 64)))
        pairs = make_pairs(n, seed=int(spec.get("seed", 0)), split="train",
                           image_size=int(spec.get("image_size", 56)))
    else:  # the training side of the declared split: held-out pairs are never trained on
        from r1reward.data.splits import split_pairs

        pairs = split_pairs(spec, cap=False)[0]
    if cfg.min_difficulty is not None:
        pairs = [p for p in pairs if (p.difficulty or 0) >= cfg.min_difficulty]
    if not pairs:
        raise ValueError(f"recipe data {spec}: no training pairs (rl.min_difficulty={cfg.min_difficulty})")
    return pairs


def batch_indices(n_pairs: int, step: int, per_process: int, world: int, rank: int,
                  seed: int) -> list[int]:
    """Pair indices for ``step`` on process ``rank``: an endless stream of seeded epoch
    permutations, the global batch of ``per_process * world`` taken in order, so the data
    position is simply ``step * per_process * world`` and resuming needs nothing else."""
    size = per_process * world
    start = step * size + rank * per_process
    out: list[int] = []
    for pos in range(start, start + per_process):
        epoch, offset = divmod(pos, n_pairs)
        perm = torch.randperm(n_pairs, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        out.append(int(perm[offset]))
    return out


# --------------------------------------------------------------------------------------------
# 2. Tensors: encode each prompt once, collate micro-batches, log-probs of completions
# --------------------------------------------------------------------------------------------

_SEQUENCE_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")


def collate(encoded: Sequence[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-pad single-prompt encodings into one batch; image tensors (``pixel_values``,
    ``image_grid_thw``, videos) are concatenated in order, as Qwen2.5-VL expects."""
    width = max(e["input_ids"].shape[1] for e in encoded)
    out: dict[str, torch.Tensor] = {}
    for key in encoded[0]:
        values = [e[key] for e in encoded if key in e]
        if key in _SEQUENCE_KEYS:
            fill = pad_id if key == "input_ids" else 0
            out[key] = torch.cat([
                torch.nn.functional.pad(v, (width - v.shape[1], 0), value=fill) for v in values
            ])
        else:
            out[key] = torch.cat(values)
    return out


def completion_tensors(token_ids: Sequence[Sequence[int]], pad_id: int):
    """Right-padded completion ids ``[B, T]`` and their mask ``[B, T]`` (1 on sampled tokens)."""
    width = max(1, max(len(t) for t in token_ids))
    ids = torch.full((len(token_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(token_ids), width), dtype=torch.float32)
    for i, t in enumerate(token_ids):
        ids[i, : len(t)] = torch.tensor(list(t), dtype=torch.long)
        mask[i, : len(t)] = 1.0
    return ids, mask


def sequence_logprobs(model, prompt: dict, completion_ids: torch.Tensor,
                      completion_mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Log-probabilities ``[B, T]`` of ``completion_ids`` ``[B, T]`` after the left-padded
    ``prompt`` batch (input_ids ``[B, P]`` plus image tensors), at the sampling temperature,
    through :func:`r1reward.rollout.completion_logprobs`; 0 where ``completion_mask`` is 0."""
    from r1reward.rollout import completion_logprobs

    device = completion_ids.device
    inputs = {k: v.to(device) for k, v in prompt.items()}
    p = inputs["input_ids"].shape[1]
    cmask = completion_mask.to(inputs["attention_mask"].dtype)
    inputs["input_ids"] = torch.cat([inputs["input_ids"], completion_ids], dim=1)
    inputs["attention_mask"] = torch.cat([inputs["attention_mask"], cmask], dim=1)
    for key in ("mm_token_type_ids", "token_type_ids"):
        if key in inputs:
            inputs[key] = torch.cat([inputs[key], torch.zeros_like(completion_ids)], dim=1)
    full_mask = torch.cat([torch.zeros_like(inputs["attention_mask"][:, :p]), cmask], dim=1)
    if not bool(cmask.any()):
        # nothing to score (empty completions): still run the model so the loss has a graph
        # and every process's backward reaches the same parameters (DDP, DeepSpeed)
        anchor = model(**inputs, logits_to_keep=1).logits.sum() * 0.0
        return torch.zeros(completion_ids.shape, device=device) + anchor
    return completion_logprobs(model, inputs, full_mask, temperature=temperature)[:, p:]


@dataclass
class Rollout:
    """One RL step's samples on this process. ``B`` samples, ``T`` completion tokens."""

    prompts: list[dict]  # encoded prompt of each *pair*; sample j uses prompts[j // k]
    k: int  # samples per prompt
    ids: torch.Tensor  # [B, T]
    mask: torch.Tensor  # [B, T]
    texts: list[str]
    labels: list[int]
    finish: list[str]
    pair_ids: list[str]
    old_logp: torch.Tensor | None = None  # [B, T] from the sampler (rl.old_logprobs="sampler")

    def micro(self, idx: torch.Tensor, pad_id: int) -> dict[str, torch.Tensor]:
        return collate([self.prompts[int(j) // self.k] for j in idx], pad_id)


def batched_logprobs(model, ro: Rollout, pad_id: int, micro: int, temperature: float,
                     rows: torch.Tensor | None = None) -> torch.Tensor:
    """Log-probs ``[B, T]`` of every sample (or only of ``rows``; the others stay 0), without
    gradients, in micro-batches, with the model in eval mode as when it sampled (no dropout,
    e.g. LoRA's, in old or reference log-probs)."""
    out = torch.zeros_like(ro.mask)
    device = next(model.parameters()).device
    rows = torch.arange(len(ro.texts)) if rows is None else rows
    with torch.no_grad(), eval_mode(model):
        for idx in rows.split(micro) if len(rows) else ():
            lp = sequence_logprobs(model, ro.micro(idx, pad_id), ro.ids[idx].to(device),
                                   ro.mask[idx].to(device), temperature)
            out[idx] = lp.float().cpu()
    return out * ro.mask


# --------------------------------------------------------------------------------------------
# 3. Rollout and rewards
# --------------------------------------------------------------------------------------------


def make_judge(spec: str | dict):
    """The consistency judge of ``rl.judge``: ``"rule"`` (the toy's :class:`RuleJudge`) or a
    mapping ``{kind: openai | transformers, ...}`` handed to :func:`r1reward.judges.build_judge`."""
    from r1reward.judges import build_judge

    if isinstance(spec, str):
        return build_judge(spec)
    spec = dict(spec)
    return build_judge(spec.pop("kind"), **spec)


def conversations(pairs: list) -> list[list[dict]]:
    """The Table-1 chat messages (images first) of each pair."""
    from r1reward.prompt import build_messages

    return [build_messages(p.question, p.response_1, p.response_2, images=p.images,
                           videos=getattr(p, "videos", ()) or ()) for p in pairs]


def sample_rollout(model, processor, pairs: list, cfg: RLConfig, seed: int) -> Rollout:
    """Sample ``cfg.samples_per_prompt`` judgments for each pair (Table-1 prompt with images)."""
    from r1reward.rollout import generate

    convs = conversations(pairs)
    k = int(cfg.samples_per_prompt)
    groups = generate(  # generate() samples in eval mode and restores the mode
        model, processor, convs, num_return_sequences=k, do_sample=True,
        temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.rollout_batch_size, seed=seed, engine=cfg.engine,
        return_logprobs=cfg.old_logprobs == "sampler",
    )

    flat = [c for g in groups for c in g]
    assert len(flat) == len(pairs) * k, "rollout.generate returned the wrong number of samples"
    # A sampled vision token (<|image_pad|>, <|vision_start|>, ...) would make the scoring
    # forward pass look for an image that is not there; such a completion is cut just before it
    # (the kept prefix is exactly what was sampled) and scored on that prefix.
    cfg_ = getattr(model, "config", None)
    vision = {getattr(cfg_, n, None) for n in ("image_token_id", "video_token_id",
                                                 "vision_start_token_id", "vision_end_token_id")}
    vision.discard(None)
    tok = getattr(processor, "tokenizer", processor)
    ids, texts, finish, logps = [], [], [], []
    for c in flat:
        cut = next((i for i, t in enumerate(c.token_ids) if t in vision), None)
        if cut is None:
            ids.append(list(c.token_ids)), texts.append(c.text), finish.append(c.finish)
        else:
            ids.append(list(c.token_ids[:cut]))
            texts.append(tok.decode(c.token_ids[:cut], skip_special_tokens=True))
            finish.append("vision-token")
        logps.append(None if c.logprobs is None else c.logprobs[: len(ids[-1])])
    return make_rollout(processor, pairs, convs, ids, k, texts=texts, finish=finish,
                        logprobs=None if any(lp is None for lp in logps) else logps)


def make_rollout(processor, pairs: list, convs: list, token_ids: Sequence[Sequence[int]], k: int,
                 *, texts: list[str] | None = None, finish: list[str] | None = None,
                 logprobs: Sequence[Sequence[float]] | None = None) -> Rollout:
    """Tensors of a rollout from sampled token ids (``len(pairs) * k`` of them, the ``k``
    samples of pair ``i`` at rows ``i*k ... i*k+k-1``): each prompt encoded once with
    :func:`r1reward.rollout.encode`, completions right-padded with their mask; ``logprobs``
    (the sampler's, one per token) become :attr:`Rollout.old_logp`."""
    from r1reward.rollout import encode

    n = len(pairs) * k
    if len(token_ids) != n:
        raise ValueError(f"make_rollout: {len(token_ids)} completions for {len(pairs)} pairs x {k}")
    tok = getattr(processor, "tokenizer", processor)
    texts = texts if texts is not None else [tok.decode(t, skip_special_tokens=True) for t in token_ids]
    ids, mask = completion_tensors(token_ids, _pad_id(processor))
    old = None
    if logprobs is not None:
        old = torch.zeros_like(mask)
        for i, lp in enumerate(logprobs):
            old[i, : len(lp)] = torch.tensor(list(lp), dtype=torch.float32)
        old = old * mask
    return Rollout(
        prompts=[dict(encode(processor, [c])) for c in convs], k=k, ids=ids, mask=mask,
        texts=list(texts), labels=[int(pairs[j // k].preferred) for j in range(n)],
        finish=list(finish) if finish is not None else ["stop"] * n,
        pair_ids=[pairs[j // k].id for j in range(n)], old_logp=old,
    )


def score(ro: Rollout, judge, use_consistency: bool, images=None) -> dict[str, torch.Tensor]:
    """Reward parts ``[B]`` (Section 3.2): format, result, consistency and their combination.
    Without the consistency reward the combination sees consistency 0: ``Result + 0.5 Format``,
    and the judge is asked only when it is free to run (``judge.free``, the toy's rule judge:
    its verdicts are still logged); a model or paid judge is then not called and the
    consistency part is NaN. ``images``: one list per sample, for judges that look at them."""
    from r1reward import rewards
    from r1reward.prompt import parse_judgment

    fmt = torch.tensor(rewards.format_rewards(ro.texts), dtype=torch.float32)
    res = torch.tensor(rewards.result_rewards(ro.texts, ro.labels), dtype=torch.float32)
    if use_consistency or getattr(judge, "free", False):
        judged = [parse_judgment(t) for t in ro.texts]
        cons = torch.tensor(
            judge.judge([j.analysis for j in judged], [j.answer for j in judged], images=images),
            dtype=torch.float32,
        )
    else:
        cons = torch.full_like(fmt, float("nan"))
    used = cons if use_consistency else torch.zeros_like(cons)
    total = torch.tensor(rewards.combine_batch(fmt.tolist(), res.tolist(), used.tolist()),
                         dtype=torch.float32)
    return {"format": fmt, "result": res, "consistency": cons, "total": total}


# --------------------------------------------------------------------------------------------
# 4. Advantages: returns with KL inside, normalised over the whole batch on every process
# --------------------------------------------------------------------------------------------


def global_normalize(accelerator, returns: torch.Tensor, mask: torch.Tensor,
                     filter_sigma: float | None) -> tuple[torch.Tensor, dict]:
    """Standardise ``returns`` ``[B, T]`` over all masked positions of *all* processes.

    Every process gathers the (padded) returns and masks of the others and calls
    :func:`algorithms.normalize_advantages` on the whole batch, then keeps its own rows, so the
    result equals one process holding the whole batch exactly (test_rl_distributed). Needs the
    same ``B`` on every process, which the trainer guarantees.
    """
    from r1reward.algorithms import normalize_advantages

    b, t = returns.shape
    if accelerator.num_processes == 1:
        return normalize_advantages(returns, mask, filter_sigma=filter_sigma)
    device = accelerator.device
    r = accelerator.pad_across_processes(returns.to(device).contiguous(), dim=1)
    m = accelerator.pad_across_processes(mask.to(device).contiguous(), dim=1)
    all_r, all_m = accelerator.gather(r), accelerator.gather(m)
    adv, info = normalize_advantages(all_r, all_m, filter_sigma=filter_sigma)
    start = accelerator.process_index * b
    return adv[start : start + b, :t].cpu(), info


def compute_advantages(accelerator, cfg: RLConfig, reward: torch.Tensor, mask: torch.Tensor,
                       kl: torch.Tensor | None) -> tuple[torch.Tensor, dict]:
    """Advantages ``[B, T]`` for the configured algorithm (Reinforce++ returns with the KL in
    the reward and batch normalisation, or GRPO group advantages broadcast over tokens)."""
    from r1reward import algorithms

    sigma = cfg.filter_sigma if cfg.advantage_filter else None
    kind = ALGO_PRESETS[cfg.algo]["advantage"]
    if kind in ("group", "group-mean"):
        group = algorithms.group_advantages if kind == "group" else algorithms.dr_grpo_advantages
        adv = group(reward, int(cfg.samples_per_prompt))
        adv = torch.nan_to_num(adv.float(), nan=0.0, posinf=0.0, neginf=0.0)
        info: dict = {"filtered_fraction": 0.0}
        if sigma is not None:
            kept = adv.abs() <= sigma
            info["filtered_fraction"] = float(1 - kept.float().mean())
            adv = adv * kept
        return adv[:, None] * mask, info
    kl_r = kl if ALGO_PRESETS[cfg.algo]["kl_in"] == "reward" else None
    returns = algorithms.token_rewards(reward, mask, kl=kl_r, kl_coef=cfg.kl_coef if kl_r is not None else 0.0)
    return global_normalize(accelerator, returns, mask, sigma)


# --------------------------------------------------------------------------------------------
# 5. The update: PPO epochs x mini-batches x micro-batches (gradient accumulation)
# --------------------------------------------------------------------------------------------


def ppo_update(accelerator, model, optimizer, cfg: RLConfig, ro: Rollout, old_logp: torch.Tensor | None,
               advantages: torch.Tensor, ref_logp: torch.Tensor | None, pad_id: int,
               generator: torch.Generator) -> dict[str, float]:
    """``cfg.ppo_epochs`` passes over the rollout; each optimizer step sees ``mini_batch_size``
    samples, accumulated over micro-batches of ``micro_batch_size`` (Section 3.1, Eq. 3-4).

    ``old_logp``, ``advantages``, ``ref_logp``: ``[B, T]`` on the CPU, masked by ``ro.mask``.
    ``old_logp=None`` saves a forward pass: the samples of the first mini-batch of the first
    epoch are scored before any optimizer step, so their old log-probs are the detached current
    ones (as TRL does); only the other samples get a separate no-grad pass here. With dropout
    active (e.g. LoRA dropout) those first ratios then carry the dropout noise. Returns the step's diagnostics (mean loss, max gradient norm, max ratio, non-finite ratio
    count, clip fraction, number of optimizer steps).
    """
    from r1reward import algorithms

    if accelerator.gradient_accumulation_steps != cfg.grad_accum:
        raise ValueError(
            f"accelerator.gradient_accumulation_steps={accelerator.gradient_accumulation_steps} but "
            f"rl.mini_batch_size/micro_batch_size={cfg.grad_accum}: use make_accelerator(cfg)"
        )
    model.train()
    device = accelerator.device
    n = len(ro.texts)
    losses, grad_norms, max_ratio, nonfinite, clip_fr, updates = [], [], 0.0, 0, [], 0
    orders = [torch.randperm(n, generator=generator) for _ in range(cfg.ppo_epochs)]
    lazy: set[int] = set()
    if old_logp is None:  # score everything but the first mini-batch now, before any update
        lazy = set(orders[0][: cfg.mini_batch_size].tolist())
        old_logp = batched_logprobs(model, ro, pad_id, cfg.micro_batch_size, cfg.temperature,
                                    rows=orders[0][cfg.mini_batch_size :])
    for order in orders:
        # micro-batches in order; accelerate syncs and steps every `grad_accum` of them (one
        # mini-batch), which also drives DeepSpeed's and FSDP's own accumulation
        for idx in order.split(cfg.micro_batch_size):
            with accelerator.accumulate(model):
                mask = ro.mask[idx].to(device)
                logp = sequence_logprobs(model, ro.micro(idx, pad_id), ro.ids[idx].to(device),
                                         mask, cfg.temperature)
                if lazy and lazy.issuperset(idx.tolist()):  # first mini-batch, first epoch
                    old_logp[idx] = logp.detach().float().cpu() * ro.mask[idx]
                    lazy -= set(idx.tolist())
                loss, info = policy_loss(cfg, logp, old_logp[idx].to(device),
                                         advantages[idx].to(device), mask)
                if ref_logp is not None and ALGO_PRESETS[cfg.algo]["kl_in"] == "loss":
                    kl = algorithms.kl_estimate(logp, ref_logp[idx].to(device), kind=cfg.kl_kind, mask=mask)
                    loss = loss + cfg.kl_coef * ((kl.sum(1) / mask.sum(1).clamp(min=1)).mean())
                accelerator.backward(loss)  # divided by grad_accum inside accelerate
                if accelerator.sync_gradients:
                    norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                    grad_norms.append(float("nan") if norm is None else _f(norm))
                    updates += 1
                optimizer.step()  # a no-op until the mini-batch's last micro-batch
                optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            max_ratio = _nanmax([max_ratio, _f(info["max_ratio"])]) if info["num_tokens"] else max_ratio
            nonfinite += int(info["nonfinite_ratio_count"])
            clip_fr.append(_f(info["clip_fraction"]))
    return {
        "loss": _nanmean(losses), "loss_max": _nanmax(losses), "grad_norm": _nanmax(grad_norms),
        "max_ratio": max_ratio, "nonfinite_ratios": nonfinite, "clip_fraction": _nanmean(clip_fr),
        "optimizer_steps": updates,
    }


def policy_loss(cfg: RLConfig, logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """The configured surrogate (``rl.loss``) on one micro-batch, all ``[B, T]``: PPO's with
    Pre-Clip, clip-higher and the length normaliser as set, or GSPO's / CISPO's."""
    from r1reward import algorithms

    if cfg.loss == "gspo":
        return algorithms.gspo_loss(logp, old_logp, advantages, mask, pre_clip=cfg.pre_clip_bounds)
    if cfg.loss == "cispo":
        return algorithms.cispo_loss(logp, old_logp, advantages, mask,
                                     clip_eps_high=cfg.clip_eps_high if cfg.clip_eps_high is not None else 0.28,
                                     pre_clip=cfg.pre_clip_bounds)
    return algorithms.policy_loss(logp, old_logp, advantages, mask, clip_eps=cfg.clip_eps,
                                  pre_clip=cfg.pre_clip_bounds, clip_eps_high=cfg.clip_eps_high,
                                  length_norm=bool(cfg.length_norm))


def collapse_reason(rec: dict, max_new_tokens: int, *, min_well_formed: float = 0.5,
                    length_fraction: float = 0.9) -> str | None:
    """Why the step of metrics record ``rec`` counts as collapsed, or ``None``: ``"non-finite"``
    (parameters or loss no longer finite), ``"ill-formed"`` (fewer than ``min_well_formed`` of its
    sampled judgments well formed) or ``"length"`` (their mean length reached
    ``length_fraction * max_new_tokens``: the paper's "length hits the maximum", Sec. 3.1).
    The one definition of collapse; :func:`r1reward.lab.collapse_step` applies it to a run."""
    loss = rec.get("loss", 0.0)
    if not rec.get("params_finite", True) or not (isinstance(loss, int | float) and math.isfinite(loss)):
        return "non-finite"
    if rec["well_formed"] < min_well_formed:
        return "ill-formed"
    if rec["length_mean"] >= length_fraction * max_new_tokens:
        return "length"
    return None


def _f(x) -> float:
    return float(x.detach().float().item()) if torch.is_tensor(x) else float(x)


def _nanmean(xs: list[float]) -> float:
    return float(np.mean(xs)) if xs else 0.0


def _nanmax(xs: list[float]) -> float:
    if not xs:
        return 0.0
    return float("nan") if any(math.isnan(x) for x in xs) else float(max(xs))


def _pad_id(processor) -> int:
    tok = getattr(processor, "tokenizer", processor)
    pid = getattr(tok, "pad_token_id", None)
    return int(pid if pid is not None else (getattr(tok, "eos_token_id", None) or 0))


def params_finite(model) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


# --------------------------------------------------------------------------------------------
# 6. Checkpoints, metrics, resume
# --------------------------------------------------------------------------------------------


RUN_FILE = "run.json"
#: What a resumed run may change: how far it runs and how it reports, not what it computes.
RESUME_MAY_CHANGE = frozenset(
    {"steps", "progress", "save_every", "save_total_limit", "report_to", "stop_on_nonfinite"}
)
#: The files of a run in its folder; a fresh run removes those of an earlier one.
RUN_OUTPUTS = (RUN_FILE, "metrics.jsonl", "summary.json", "rl_config.json", "recipe.yaml",
               "checkpoints", "final")


class ResumeError(RuntimeError):
    """``--resume`` cannot continue this folder's run (the message says why and what to do)."""


def run_identity(recipe: dict, cfg: RLConfig, pairs: Sequence[Any]) -> dict:
    """What fixes a run's computation: the recipe (its ``rl`` section resolved, minus
    :data:`RESUME_MAY_CHANGE`) and the ids of its training pairs; with their hash."""
    rl_part = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RESUME_MAY_CHANGE}
    config = {**{k: v for k, v in recipe.items() if k != "rl"}, "rl": rl_part}
    config = json.loads(json.dumps(config, sort_keys=True, default=str))
    ids = [str(getattr(p, "id", "")) for p in pairs]
    blob = json.dumps([config, ids], sort_keys=True).encode()
    return {"config": config, "n_pairs": len(ids),
            "config_hash": hashlib.sha256(blob).hexdigest()[:16]}


def start_run(out_dir: Path, identity: dict) -> dict:
    """A fresh run in ``out_dir``: remove an earlier run's outputs (:data:`RUN_OUTPUTS`, so
    neither its checkpoints nor its metrics can be mistaken for this run's) and write
    ``run.json`` with a new run id. Main process only."""
    for name in RUN_OUTPUTS:
        target = out_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    run = {"run_id": uuid.uuid4().hex[:12], "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           **identity}
    (out_dir / RUN_FILE).write_text(json.dumps(run, indent=1))
    return run


def resume_point(out_dir: Path, identity: dict) -> tuple[dict, Path]:
    """``(run, checkpoint)`` to continue from: this folder's run and its last complete
    checkpoint, which must carry the same run id and the same settings.

    Raises:
        ResumeError: no run, no checkpoint, a checkpoint of another run, or other settings.
    """
    path = out_dir / RUN_FILE
    if not path.is_file():
        raise ResumeError(f"--resume: {out_dir} holds no run ({RUN_FILE} missing); start it "
                          "without --resume")
    run = json.loads(path.read_text())
    found = _checkpoints(out_dir)
    if not found:
        raise ResumeError(
            f"--resume: run {run['run_id']} in {out_dir} saved no complete checkpoint (with "
            "rl.save_every=0 the only one is written at the end); nothing to resume -- rerun "
            "with --overwrite")
    last = found[-1]
    state = json.loads((last / "trainer_state.json").read_text())
    if state.get("run_id") != run["run_id"]:
        raise ResumeError(f"--resume: {last} belongs to run {state.get('run_id')}, not to this "
                          f"folder's run {run['run_id']}; refusing to continue another run")
    if state.get("config_hash") != identity["config_hash"]:
        diff = _diff(state.get("config") or {}, identity["config"])
        if state.get("n_pairs") != identity["n_pairs"]:
            diff.append(f"training pairs {state.get('n_pairs')} -> {identity['n_pairs']}")
        raise ResumeError(f"--resume: {last} was written with other settings: "
                          f"{'; '.join(diff[:8]) or 'other training pairs'}; only "
                          f"rl.{{{', '.join(sorted(RESUME_MAY_CHANGE))}}} may change")
    return run, last


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(a.keys() | b.keys())
                for d in _diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [f"{prefix[:-1]} {a!r} -> {b!r}"]


def _checkpoints(out_dir: Path) -> list[Path]:
    root = out_dir / "checkpoints"
    done = [p for p in root.glob("step-*") if (p / "trainer_state.json").exists()]
    return sorted(done, key=lambda p: int(p.name.split("-")[1]))


def save_checkpoint(accelerator, out_dir: Path, step: int, data_position: int, cfg: RLConfig,
                    run: dict | None = None) -> Path:
    """Model/adapter, optimizer and RNG states (torch, python, numpy) through
    ``accelerator.save_state``, then ``trainer_state.json`` last (its presence marks a complete
    checkpoint) with the run's id and resolved settings (``run``, see :func:`start_run`).
    Older checkpoints beyond ``save_total_limit`` are removed."""
    path = out_dir / "checkpoints" / f"step-{step:06d}"
    accelerator.save_state(str(path))
    if accelerator.is_main_process:
        state = {"step": step, "data_position": data_position, "seed": cfg.seed,
                 **{k: (run or {}).get(k) for k in ("run_id", "config_hash", "n_pairs", "config")}}
        (path / "trainer_state.json").write_text(json.dumps(state))
        for old in _checkpoints(out_dir)[: -max(1, cfg.save_total_limit)]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return path


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Keep the metric lines of steps ``<= last_step`` (a killed run may have logged past its
    last checkpoint; those steps are recomputed identically)."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= last_step]
    path.write_text("".join(ln + "\n" for ln in keep))


def read_metrics(out_dir: str | Path) -> list[dict]:
    """The per-step records of a run (``metrics.jsonl``)."""
    path = Path(out_dir) / "metrics.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []


# --------------------------------------------------------------------------------------------
# 7. The training loop
# --------------------------------------------------------------------------------------------


def build(recipe: dict, cfg: RLConfig, accelerator):
    """Policy (with LoRA / 4-bit when asked), optional frozen reference, processor, optimizer."""
    from r1reward.models import load_model
    from r1reward.recipes import resolve_model_path

    path = cfg.init_model or resolve_model_path(recipe)
    section = recipe.get("model") or {}
    lora = cfg.lora if cfg.lora is not None else section.get("lora")
    quant = cfg.quantization if cfg.quantization is not None else section.get("quantization")
    dtype_name = cfg.dtype or section.get("dtype")
    dtype = getattr(torch, dtype_name) if dtype_name else None
    model, processor = load_model(str(path), dtype=dtype, lora=lora, quantization=quant)
    if cfg.freeze_vision:
        # the visual features the cold start was trained on stay as they are; on the toy
        # (StableReinforce, lr 1e-4, 24 steps from a 73 % SFT model) training the randomly
        # initialised vision tower with the policy gave 51.5 % held-out, keeping it frozen 67.5 %
        freeze_vision(model)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    ref = None
    if cfg.kl_coef > 0 and not lora:  # with LoRA the reference is the model, adapter off
        ref, _ = load_model(str(path), dtype=dtype, quantization=quant)
        ref.requires_grad_(False).eval().to(accelerator.device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.adam_betas)
    model, optimizer = accelerator.prepare(model, optimizer)
    return model, ref, processor, optimizer


@contextlib.contextmanager
def policy_for_generation(accelerator, model):
    """The plain policy module for ``generate``. Under DeepSpeed ZeRO-3 its parameters are
    sharded across processes, so they are gathered for the duration of the rollout (as TRL does);
    with DDP (and on one process) this is just ``unwrap_model``. Not exercised on the CPU test
    machine, where DeepSpeed is not installed."""
    unwrapped = accelerator.unwrap_model(model)
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is not None and getattr(plugin, "zero_stage", 0) == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(model.parameters())):
            yield unwrapped
    else:
        yield unwrapped


def reference_logprobs(accelerator, model, ref, ro: Rollout, pad_id: int, cfg: RLConfig):
    """Log-probs under the frozen reference ``[B, T]``: the separate copy, or the LoRA model
    with its adapter disabled. ``None`` when ``kl_coef == 0`` (no reference is kept)."""
    if cfg.kl_coef <= 0:
        return None
    if ref is not None:
        return batched_logprobs(ref, ro, pad_id, cfg.micro_batch_size, cfg.temperature)
    with accelerator.unwrap_model(model).disable_adapter():
        return batched_logprobs(model, ro, pad_id, cfg.micro_batch_size, cfg.temperature)


def make_accelerator(cfg: RLConfig, out_dir: str | Path | None = None):
    """The Accelerator of a run: its gradient accumulation is ``mini_batch_size //
    micro_batch_size``; DDP/DeepSpeed/FSDP and the process count come from ``accelerate launch``
    (configs in ``r1reward/recipes/accelerate/``); trackers from ``rl.report_to``. Without a GPU
    (or other accelerator) it runs on the CPU, with gloo between processes."""
    from accelerate import Accelerator

    # On a machine without any accelerator, several processes (torchrun / `accelerate launch
    # --multi_gpu`) must use gloo on the CPU; accelerate only does so when told `cpu=True`.
    has_device = torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    return Accelerator(cpu=not has_device, gradient_accumulation_steps=cfg.grad_accum,
                       log_with=cfg.report_to or None,
                       project_dir=str(out_dir) if out_dir is not None else None)


def train_rl(recipe: dict, *, out_dir: str | Path, resume: bool = False,
             pairs: Sequence[Any] | None = None) -> Path:
    """Run RL as described by ``recipe["rl"]``; return the folder of the final model.

    Writes ``out_dir/metrics.jsonl`` (one record per step), ``out_dir/checkpoints/step-N`` every
    ``save_every`` steps, ``out_dir/final`` (model or adapter + processor) and
    ``out_dir/summary.json``. With ``resume=True`` it continues from the last checkpoint and
    reproduces the uninterrupted run's metrics (same seed). ``pairs`` (e.g. the curated pairs of
    :func:`r1reward.pipeline.curated_pairs`) replaces the recipe's data; ``rl.min_difficulty``
    still applies."""
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    cfg = RLConfig.from_dict(recipe.get("rl")).resolved()
    out_dir = Path(out_dir)
    accelerator = make_accelerator(cfg, out_dir)
    set_seed(cfg.seed)
    if cfg.vllm and cfg.engine != "transformers":
        from r1reward import rollout_vllm

        rollout_vllm.configure(**cfg.vllm)
    rank, world = accelerator.process_index, accelerator.num_processes
    if pairs is None:
        pairs = load_pairs(cfg, recipe)
    else:
        pairs = [p for p in pairs if cfg.min_difficulty is None or (p.difficulty or 0) >= cfg.min_difficulty]
        if not pairs:
            raise ValueError(f"train_rl: no pairs with difficulty >= {cfg.min_difficulty}")
    # a run id and the settings it computes with; a resumed run must match its checkpoint's
    identity = run_identity(recipe, cfg, pairs)
    if resume:
        run, last = resume_point(out_dir, identity)  # before any model is loaded
    elif accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        start_run(out_dir, identity)
    accelerator.wait_for_everyone()
    run = json.loads((out_dir / RUN_FILE).read_text())
    if accelerator.is_main_process:
        from r1reward.recipes import save_recipe

        (out_dir / "rl_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1, default=str))
        save_recipe(recipe, out_dir)  # recipe.yaml: the resolved recipe beside the run
    model, ref, processor, optimizer = build(recipe, cfg, accelerator)
    judge = make_judge(cfg.judge)
    pad_id = _pad_id(processor)
    metrics_path = out_dir / "metrics.jsonl"

    start = 0
    if resume:
        accelerator.load_state(str(last))
        state = json.loads((last / "trainer_state.json").read_text())
        start = int(state["step"])
        assert state["data_position"] == start * cfg.pairs_per_step * world, (
            f"{last}: data position {state['data_position']} does not match step {start} with "
            f"{world} processes x {cfg.pairs_per_step} pairs"
        )
        if accelerator.is_main_process:
            _truncate_metrics(metrics_path, start)
    accelerator.wait_for_everyone()
    if cfg.report_to:
        accelerator.init_trackers("r1reward-rl", config=_flat(dataclasses.asdict(cfg)))

    bar = tqdm(range(start, cfg.steps), desc=f"rl {cfg.algo}", initial=start, total=cfg.steps,
               disable=not (cfg.progress and accelerator.is_local_main_process))
    collapsed = False
    stopped: str | None = None  # why the run ended before cfg.steps
    run_collapsed = 0  # collapsed steps in a row (rl.stop_on_collapse)
    end = cfg.steps  # the step the run ends at
    saved = start if resume else -1  # the step of the last checkpoint written
    for step in bar:
        t0 = time.perf_counter()
        # 1. rollout: this process's slice of the global batch
        chosen = batch_indices(len(pairs), step, cfg.pairs_per_step, world, rank, cfg.seed)
        if cfg.both_orders:  # every batch's labels are then half 1 and half 2
            batch = [q for i in chosen for q in (pairs[i], pairs[i].swap())]
        else:
            batch = [pairs[i].swap() if _u(cfg.seed, step, i) < cfg.swap_prob else pairs[i]
                     for i in chosen]
        # the frozen vision tower's features of each image, computed once for the whole step
        with frozen_vision_cache(accelerator.unwrap_model(model)):
            with policy_for_generation(accelerator, model) as policy:
                ro = sample_rollout(policy, processor, batch, cfg,
                                    seed=cfg.seed * 100_003 + step * world + rank)
            # 2. rewards (a judge that looks at images gets each sample's pair's images)
            if getattr(judge, "use_images", False):
                parts = score(ro, judge, bool(cfg.consistency_reward),
                              images=[list(batch[j // ro.k].images) for j in range(len(ro.texts))])
            else:
                parts = score(ro, judge, bool(cfg.consistency_reward))
            # 3. old and reference log-probs (policy before this step's updates): the old ones as
            # the sampler recorded them; else, without a reference, left to ppo_update (which saves
            # a forward pass), or a separate pass
            ref_logp = reference_logprobs(accelerator, model, ref, ro, pad_id, cfg)
            old_logp = ro.old_logp
            if old_logp is None and ref_logp is not None:
                old_logp = batched_logprobs(model, ro, pad_id, cfg.micro_batch_size, cfg.temperature)
            kl = None
            if ref_logp is not None:
                from r1reward.algorithms import kl_estimate

                kl = kl_estimate(old_logp, ref_logp, kind=cfg.kl_kind, mask=ro.mask)
            # 4. advantages over the whole batch (all processes)
            adv, adv_info = compute_advantages(accelerator, cfg, parts["total"], ro.mask, kl)
            # 5-6. PPO epochs of the policy loss with Pre-Clip
            gen = torch.Generator().manual_seed(cfg.seed * 7_919 + step * world + rank)
            upd = ppo_update(accelerator, model, optimizer, cfg, ro, old_logp, adv, ref_logp, pad_id, gen)
        finite = params_finite(model)

        rec = step_record(accelerator, cfg, step, ro, parts, upd, kl, adv, adv_info, finite,
                          seconds_since=t0)
        if accelerator.is_main_process:
            with metrics_path.open("a") as fh:
                fh.write(json.dumps(rec) + "\n")
        if cfg.report_to:
            accelerator.log({k: v for k, v in rec.items() if isinstance(v, int | float)}, step=step + 1)
        bar.set_postfix(acc=f"{rec['accuracy']:.2f}", len=f"{rec['length_mean']:.0f}",
                        loss=f"{rec['loss']:.3g}")
        if not rec["params_finite"] and cfg.stop_on_nonfinite:
            collapsed, stopped = True, "non-finite"
            break
        why = collapse_reason(rec, cfg.max_new_tokens, min_well_formed=cfg.collapse_min_well_formed,
                              length_fraction=cfg.collapse_length_fraction)
        run_collapsed = run_collapsed + 1 if why else 0
        if cfg.stop_on_collapse and run_collapsed >= cfg.stop_on_collapse:
            # the model still has finite weights: it is saved as the final model below
            stopped, end = f"collapsed ({why}) {run_collapsed} steps in a row", step + 1
            break
        if cfg.save_every and ((step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps):
            save_checkpoint(accelerator, out_dir, step + 1, (step + 1) * cfg.pairs_per_step * world, cfg, run)
            saved = step + 1
    bar.close()
    done = max(start, end)
    if not collapsed and saved != done:
        # the last state stays resumable (to extend the run) even with save_every 0
        save_checkpoint(accelerator, out_dir, done, done * cfg.pairs_per_step * world, cfg, run)

    final = out_dir / "final"
    accelerator.wait_for_everyone()
    if not collapsed:
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.save_pretrained(str(final), is_main_process=accelerator.is_main_process,
                                  save_function=accelerator.save,
                                  state_dict=accelerator.get_state_dict(model))
        if accelerator.is_main_process:
            processor.save_pretrained(str(final))
    if accelerator.is_main_process:
        recs = read_metrics(out_dir)
        summary = {"algo": cfg.algo, "steps_done": len(recs), "collapsed": collapsed,
                   "stopped": stopped, "final": str(final) if not collapsed else None}
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    if cfg.report_to:
        accelerator.end_training()
    return final


def step_record(accelerator, cfg: RLConfig, step: int, ro: Rollout, parts: dict, upd: dict,
                kl: torch.Tensor | None, adv: torch.Tensor, adv_info: dict, finite: bool, *,
                seconds_since: float) -> dict:
    """The ``metrics.jsonl`` record of RL step ``step`` (0-based): rewards, lengths and the
    update's diagnostics as global means (or maxima) over all processes, and the seconds since
    ``seconds_since`` (a ``time.perf_counter()`` value taken when the step began)."""
    lengths = ro.mask.sum(1)
    local = {
        "reward": parts["total"], "reward_format": parts["format"],
        "reward_result": parts["result"], "reward_consistency": parts["consistency"],
        # NaN where the judge was not asked (consistency reward off, judge not free)
        "consistent": torch.where(parts["consistency"].isnan(), parts["consistency"],
                                  (parts["consistency"] == 1).float()), "length": lengths,
        "truncated": torch.tensor([f == "length" for f in ro.finish], dtype=torch.float32),
    }
    g = {k: accelerator.gather(v.to(accelerator.device)).float().cpu() for k, v in local.items()}
    scal = torch.tensor([upd["loss"], upd["grad_norm"], upd["max_ratio"], upd["nonfinite_ratios"],
                         upd["clip_fraction"], float(kl.sum() / ro.mask.sum().clamp(min=1)) if kl is not None else 0.0,
                         float(not finite)], device=accelerator.device)
    red = accelerator.gather(scal[None]).cpu()
    dt = time.perf_counter() - seconds_since
    rec = {
        "step": step + 1, "algo": cfg.algo,
        "reward": _m(g["reward"]), "reward_format": _m(g["reward_format"]),
        "reward_result": _m(g["reward_result"]), "reward_consistency": _m(g["reward_consistency"]),
        "accuracy": _m(g["reward_result"]), "well_formed": _m(g["reward_format"]),
        "consistency_rate": _m(g["consistent"]), "length_mean": _m(g["length"]),
        "length_max": float(g["length"].max()), "truncated": _m(g["truncated"]),
        "loss": float(red[:, 0].mean()), "grad_norm": float(red[:, 1].max()),
        "max_ratio": float(red[:, 2].max()), "nonfinite_ratios": int(red[:, 3].sum()),
        "clip_fraction": float(red[:, 4].mean()), "kl": float(red[:, 5].mean()),
        "filtered_fraction": _f(adv_info.get("filtered_fraction", 0.0)),
        "adv_min": float(adv[ro.mask > 0].min()) if ro.mask.sum() else 0.0,
        "adv_max": float(adv[ro.mask > 0].max()) if ro.mask.sum() else 0.0,
        "reward_std": float(g["reward"].std(unbiased=False)),
        "params_finite": bool(red[:, 6].sum() == 0),
        "samples": int(g["reward"].numel()), "processes": accelerator.num_processes, "seconds": dt,
        "samples_per_s": g["reward"].numel() / dt,
    }
    return rec


def _u(seed: int, step: int, index: int) -> float:
    """A uniform number fixed by (seed, step, pair): whether that pair is shown swapped."""
    return random.Random(f"{seed}:{step}:{index}").random()


def _m(x: torch.Tensor) -> float:
    return float(x.float().mean()) if x.numel() else 0.0


def _flat(d: dict, prefix: str = "") -> dict:
    out: dict = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, int | float | str | bool) else str(v)
    return out


# --------------------------------------------------------------------------------------------
# 8. Command line
# --------------------------------------------------------------------------------------------


def check_judge(cfg: RLConfig) -> None:
    """Before any model is loaded: an OpenAI-compatible consistency judge must have an address
    (``rl.judge.base_url`` or ``$R1REWARD_JUDGE_BASE_URL``) that answers HTTP at all.

    Raises:
        ValueError: no address, or nothing listening there.
    """
    judge = cfg.judge
    if not (cfg.consistency_reward and isinstance(judge, dict) and judge.get("kind") == "openai"):
        return
    import httpx

    url = judge.get("base_url") or os.environ.get("R1REWARD_JUDGE_BASE_URL")
    if not url:
        raise ValueError("rl.judge is an OpenAI-compatible server but has no address: set "
                         "R1REWARD_JUDGE_BASE_URL (e.g. http://127.0.0.1:8001/v1 for `vllm serve "
                         "Qwen/Qwen2.5-VL-7B-Instruct --port 8001`) or rl.judge.base_url")
    try:
        httpx.get(f"{str(url).rstrip('/')}/models", timeout=5.0)
    except httpx.HTTPError as exc:
        raise ValueError(f"rl.judge: the judge server at {url} is not reachable "
                         f"({type(exc).__name__}: {exc}); start it or set "
                         "rl.consistency_reward=false") from None


def _used(out: Path) -> list[str]:
    """The outputs of an earlier run in ``out`` (:data:`RUN_OUTPUTS` that exist)."""
    return [name for name in RUN_OUTPUTS if (out / name).exists()]


def main(argv: list[str] | None = None) -> int:
    """``r1reward rl --recipe toy-ci rl.algo=reinforce++ rl.steps=40 --out runs/x [--resume]``."""
    parser = argparse.ArgumentParser(
        prog="r1reward rl",
        description="RL for the generative reward model: StableReinforce (default), Reinforce++ "
        "or GRPO. Runs on one process, or several with --accelerate-config NAME|PATH (or "
        "`accelerate launch -m r1reward.cli rl`).",
        epilog="examples:\n"
        "  r1reward rl --recipe toy-ci --out runs/rl-toy\n"
        "  r1reward rl --recipe toy-ci --out runs/rl-toy --resume rl.steps=4\n"
        "  r1reward rl --recipe toy-cpu --algo reinforce++ --out runs/rl-rpp rl.init_model=artifacts/cpu/sft\n"
        "  r1reward rl --accelerate-config ddp-cpu-2 --recipe toy-ci --out runs/rl-ddp",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--recipe", required=True, help="recipe name (toy-ci, toy-cpu, ...) or YAML path")
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE overrides, e.g. rl.lr=1e-5 rl.steps=10")
    parser.add_argument("--algo", choices=sorted(ALGO_PRESETS), help="shortcut for rl.algo=...")
    parser.add_argument("--out", default=None, help="output folder (default runs/rl-<recipe>-<algo>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue this folder's run from its last checkpoint (same run id and "
                        "settings; only rl.steps and the reporting keys may change)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start a fresh run in a folder that holds an earlier one, removing "
                        "its checkpoints, metrics and final model")
    args = parser.parse_args(argv)

    from r1reward.recipes import load_recipe

    overrides = list(args.overrides) + ([f"rl.algo={args.algo}"] if args.algo else [])
    try:
        recipe = load_recipe(args.recipe, overrides=overrides)
        cfg = RLConfig.from_dict(recipe.get("rl")).resolved()
        preflight(recipe, init_model=cfg.init_model)  # model and data paths, before any work
        check_judge(cfg)
    except (KeyError, ValueError, FileNotFoundError) as exc:
        print(f"r1reward rl: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out or f"runs/rl-{Path(args.recipe).stem}-{cfg.algo}")
    if args.resume and args.overwrite:
        print("r1reward rl: --resume continues a run and --overwrite replaces it; pick one",
              file=sys.stderr)
        return 2
    if not args.resume and not args.overwrite and _used(out):
        print(f"r1reward rl: {out} holds an earlier run ({', '.join(_used(out))}); pass --resume "
              "to continue it or --overwrite to replace it", file=sys.stderr)
        return 2
    if cfg.init_model is None:
        print(f"r1reward rl: warning: rl.init_model is null, so RL starts from model.path "
              f"({(recipe.get('model') or {}).get('path') or 'the tiny model'}), not from a "
              "cold-start SFT model (the paper starts RL from SFT, Sec. 4.1)", file=sys.stderr)
    try:
        final = train_rl(recipe, out_dir=out, resume=args.resume)
    except ResumeError as exc:
        print(f"r1reward rl: {exc}", file=sys.stderr)
        return 2
    recs = read_metrics(out)
    if recs and os.environ.get("RANK", "0") == "0":
        last = recs[-1]
        print(f"step {last['step']}: accuracy {last['accuracy']:.3f}, well-formed "
              f"{last['well_formed']:.3f}, length {last['length_mean']:.1f}; model -> {final}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
