"""What one RL step trains on: the pair stream, the sampled rollout as tensors, its log-probs and rewards.

The data half of :func:`r1reward.train.rl.train_rl`, in the order a step uses it:

* **pairs** -- :func:`load_pairs` reads the recipe's training side through
  :mod:`r1reward.data.splits`; :func:`step_batch` takes a step's slice of an endless seeded
  stream (:func:`batch_indices`), so resuming needs only the step number;
* **rollout** -- :func:`sample_rollout` samples ``samples_per_prompt`` Table-1 judgments per
  pair and holds them as a :class:`Rollout` (each prompt encoded once, completions
  right-padded with their mask);
* **log-probs** -- :func:`sequence_logprobs` (with gradient) and :func:`batched_logprobs`
  (without, in micro-batches) of the sampled tokens;
* **rewards** -- :func:`score`: format, result and consistency combined as
  ``Result * (1 + 0.5 * Consistency) + 0.5 * Format`` (Section 3.2, Eq. 5-7).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from r1reward import rewards
from r1reward.curation import select_hard
from r1reward.data.splits import load_split, split_pairs
from r1reward.decode import base_model
from r1reward.judges import build_judge, consistency_rewards
from r1reward.prompt import pair_messages
from r1reward.recipes.rl import RLConfig
from r1reward.rollout import (
    completion_logprobs,
    encode_each,
    eval_mode,
    generate,
    token_logprobs,
)

__all__ = [
    "Rollout",
    "batch_indices",
    "batched_logprobs",
    "collate",
    "completion_tensors",
    "conversations",
    "hard_subset",
    "load_pairs",
    "make_judge",
    "make_rollout",
    "micro_logprobs",
    "pad_token_id",
    "sample_images",
    "sample_rollout",
    "score",
    "sequence_logprobs",
    "shared_prompt_logprobs",
    "step_batch",
    "swap_draw",
]

# --------------------------------------------------------------------------------------------
# Pairs: a deterministic stream, sliced per process
# --------------------------------------------------------------------------------------------


def load_pairs(cfg: RLConfig, data: dict | None, pairs: Sequence[Any] | None = None) -> list:
    """The RL training pairs: ``pairs`` when given (e.g. the curated pairs of
    :func:`r1reward.chapters.artifacts.curated_pairs`), else ``rl.data`` or the recipe's ``data``
    section (``data``) read through :mod:`r1reward.data.splits` like every trainer's -- the toy
    world's train split (``source: toy``, ``train_pairs`` of them) or the training side of a pairs
    file, not cut to ``train_pairs`` (RL streams all of it; held-out pairs are never trained on)
    -- then the hard subset, ``rl.min_difficulty`` (Section 4.1: RL only on pairs the teacher
    found hard).

    Raises:
        ValueError: a data section with the retired key ``n``, or no pair left.
    """
    spec = dict(cfg.data or data or {"source": "toy"})
    where = f"recipe data {spec}" if pairs is None else "rl_inputs(pairs=...)"
    if pairs is None:
        if "n" in spec:
            raise ValueError(
                f"recipe data {spec}: key 'n' is not read; the number of toy pairs is train_pairs"
            )
        toy = str(spec.get("source", "toy")) == "toy"  # load_split makes only the split asked for
        pairs = load_split(spec, "train") if toy else split_pairs(spec, cap=False)[0]
    pairs = hard_subset(pairs, cfg.min_difficulty)
    if not pairs:
        raise ValueError(f"{where}: no training pairs (rl.min_difficulty={cfg.min_difficulty})")
    return pairs


def hard_subset(pairs: Sequence[Any], min_difficulty: int | None) -> list:
    """The pairs with ``difficulty >= min_difficulty`` (:func:`r1reward.curation.select_hard`);
    all of them when ``min_difficulty`` is ``None``."""
    return list(pairs) if min_difficulty is None else select_hard(pairs, min_difficulty)


def batch_indices(
    n_pairs: int, step: int, per_process: int, world: int, rank: int, seed: int
) -> list[int]:
    """Pair indices for ``step`` on process ``rank``: an endless stream of seeded epoch
    permutations, the global batch of ``per_process * world`` taken in order, so the data
    position is simply ``step * per_process * world`` and resuming needs nothing else."""
    size = per_process * world
    start = step * size + rank * per_process
    out: list[int] = []
    for pos in range(start, start + per_process):
        epoch, offset = divmod(pos, n_pairs)
        perm = torch.randperm(
            n_pairs, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        )
        out.append(int(perm[offset]))
    return out


def swap_draw(seed: int, step: int, index: int) -> float:
    """A uniform number fixed by (seed, step, pair): whether that pair is shown swapped."""
    return random.Random(f"{seed}:{step}:{index}").random()


def step_batch(pairs: Sequence[Any], cfg: RLConfig, step: int, world: int, rank: int) -> list:
    """The pairs process ``rank`` trains on at ``step`` (:func:`batch_indices`): each shown
    swapped with probability ``rl.swap_prob``, or with ``rl.both_orders`` in both orders (the
    batch's labels are then half 1 and half 2)."""
    chosen = batch_indices(len(pairs), step, cfg.pairs_per_step, world, rank, cfg.seed)
    if cfg.both_orders:
        return [q for i in chosen for q in (pairs[i], pairs[i].swap())]
    return [
        pairs[i].swap() if swap_draw(cfg.seed, step, i) < cfg.swap_prob else pairs[i]
        for i in chosen
    ]


# --------------------------------------------------------------------------------------------
# Tensors and log-probs: encode each prompt once, collate micro-batches
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
            out[key] = torch.cat(
                [torch.nn.functional.pad(v, (width - v.shape[1], 0), value=fill) for v in values]
            )
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


def _with_completion(prompt: dict, completion_ids: torch.Tensor, cmask: torch.Tensor) -> dict:
    """The prompt's per-token tensors (ids, mask, token types) with the completion appended:
    its ids, its mask ``cmask`` (already in the prompt mask's dtype) and text token types."""
    out = {
        "input_ids": torch.cat([prompt["input_ids"], completion_ids], dim=1),
        "attention_mask": torch.cat([prompt["attention_mask"], cmask], dim=1),
    }
    for key in ("mm_token_type_ids", "token_type_ids"):
        if key in prompt:
            out[key] = torch.cat([prompt[key], torch.zeros_like(completion_ids)], dim=1)
    return out


def sequence_logprobs(
    model,
    prompt: dict,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Log-probabilities ``[B, T]`` of ``completion_ids`` ``[B, T]`` after the left-padded
    ``prompt`` batch (input_ids ``[B, P]`` plus image tensors), at the sampling temperature,
    through :func:`r1reward.rollout.completion_logprobs`; 0 where ``completion_mask`` is 0."""
    device = completion_ids.device
    inputs = {k: v.to(device) for k, v in prompt.items()}
    p = inputs["input_ids"].shape[1]
    cmask = completion_mask.to(inputs["attention_mask"].dtype)
    inputs.update(_with_completion(inputs, completion_ids, cmask))
    full_mask = torch.cat([torch.zeros_like(inputs["attention_mask"][:, :p]), cmask], dim=1)
    if not bool(cmask.any()):
        # nothing to score (empty completions): still run the model so the loss has a graph
        # and every process's backward reaches the same parameters (DDP, DeepSpeed)
        anchor = model(**inputs, logits_to_keep=1).logits.sum() * 0.0
        return torch.zeros(completion_ids.shape, device=device) + anchor
    return completion_logprobs(model, inputs, full_mask, temperature=temperature)[:, p:]


def shared_prompt_logprobs(
    model,
    prompts: dict,
    rows: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    temperature: float = 1.0,
    *,
    row_image_grid_thw: torch.Tensor,
) -> torch.Tensor | None:
    """:func:`sequence_logprobs` of ``B`` completions whose prompts repeat (a GRPO group's
    samples): each of the ``U`` distinct prompts (``prompts``, left-padded, images included) is
    run once, its keys and values are copied to its ``rows`` (``[B]`` indices into the ``U``
    prompts), and only the completions run on top. The same sums as the full rows, with the
    prompt's share of the work divided by the group size; the numbers agree to float rounding,
    not bit for bit. Gradients flow through the shared keys and values into the prompt pass.

    Returns ``None`` where it does not apply (not a Qwen2.5-VL with images, gradient
    checkpointing, several processes, no prompt used twice); the caller then scores the rows
    in full.
    """
    base = base_model(model)
    if (
        len(set(rows.tolist())) == len(rows)
        or getattr(
            base, "is_activation_checkpointing", getattr(base, "is_gradient_checkpointing", False)
        )
        or "image_grid_thw" not in prompts
        or "mm_token_type_ids" not in prompts
        or "video_grid_thw" in prompts
        or not hasattr(getattr(base, "model", None), "get_rope_index")
        or (torch.distributed.is_available() and torch.distributed.is_initialized())
    ):
        return None
    device = completion_ids.device
    inputs = {k: v.to(device) for k, v in prompts.items()}
    p = inputs["input_ids"].shape[1]
    cmask = completion_mask.to(inputs["attention_mask"].dtype)
    rows = rows.to(device)
    # the 3D rotary positions of the full rows, as the full forward pass computes them
    full = _with_completion(
        {k: inputs[k][rows] for k in ("input_ids", "attention_mask", "mm_token_type_ids")},
        completion_ids,
        cmask,
    )
    positions, _ = base.model.get_rope_index(
        full["input_ids"],
        mm_token_type_ids=full["mm_token_type_ids"],
        image_grid_thw=row_image_grid_thw.to(device),
        attention_mask=full["attention_mask"],
    )
    first_row = {}
    for i, u in enumerate(rows.tolist()):
        first_row.setdefault(u, i)
    order = torch.tensor([first_row[u] for u in range(inputs["input_ids"].shape[0])])
    prompt_pass = model(
        **inputs, position_ids=positions[:, order.to(device), :p], use_cache=True, logits_to_keep=1
    )
    cache = prompt_pass.cache if hasattr(prompt_pass, "cache") else prompt_pass.past_key_values
    for layer in cache.layers:
        layer.keys, layer.values = layer.keys[rows], layer.values[rows]
    logits = model(
        input_ids=completion_ids,
        attention_mask=full["attention_mask"],
        position_ids=positions[:, :, p:],
        cache=cache,
        use_cache=True,
    ).logits
    logits = torch.cat([prompt_pass.logits[rows], logits[:, :-1]], dim=1)  # predict tokens 0..t-1
    lp = token_logprobs(logits, completion_ids, temperature)
    return lp * completion_mask.to(device=device, dtype=torch.float32)


def micro_logprobs(model, ro: Rollout, idx: torch.Tensor, pad_id: int, temperature: float):
    """Log-probs ``[len(idx), T]`` of the rollout's samples ``idx``: through
    :func:`shared_prompt_logprobs` when several of them share a prompt (``ro.k > 1``), else
    :func:`sequence_logprobs` on full rows."""
    device = next(model.parameters()).device
    ids, mask = ro.ids[idx].to(device), ro.mask[idx].to(device)
    if ro.k > 1:
        prompt_of = [int(j) // ro.k for j in idx]
        distinct = sorted(set(prompt_of))
        if len(distinct) < len(prompt_of):
            where = {u: i for i, u in enumerate(distinct)}
            lp = shared_prompt_logprobs(
                model,
                collate([ro.prompts[u] for u in distinct], pad_id),
                torch.tensor([where[u] for u in prompt_of]),
                ids,
                mask,
                temperature,
                row_image_grid_thw=torch.cat(
                    [ro.prompts[u].get("image_grid_thw", torch.zeros(0, 3)) for u in prompt_of]
                ),
            )
            if lp is not None:
                return lp
    return sequence_logprobs(model, ro.micro(idx, pad_id), ids, mask, temperature)


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


def batched_logprobs(
    model,
    ro: Rollout,
    pad_id: int,
    micro: int,
    temperature: float,
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """Log-probs ``[B, T]`` of every sample (or only of ``rows``; the others stay 0), without
    gradients, in micro-batches, with the model in eval mode as when it sampled (no dropout,
    e.g. LoRA's, in old or reference log-probs)."""
    out = torch.zeros_like(ro.mask)
    rows = torch.arange(len(ro.texts)) if rows is None else rows
    with torch.no_grad(), eval_mode(model):
        for idx in rows.split(micro) if len(rows) else ():
            out[idx] = micro_logprobs(model, ro, idx, pad_id, temperature).float().cpu()
    return out * ro.mask


def pad_token_id(processor: Any) -> int:
    """The tokenizer's padding id (its end-of-sequence id when it has none, else 0)."""
    tok = getattr(processor, "tokenizer", processor)
    pid = getattr(tok, "pad_token_id", None)
    return int(pid if pid is not None else (getattr(tok, "eos_token_id", None) or 0))


# --------------------------------------------------------------------------------------------
# Rollout and rewards
# --------------------------------------------------------------------------------------------


def make_judge(spec: str | dict):
    """The consistency judge of ``rl.judge``: ``"rule"`` (the toy's :class:`RuleJudge`) or a
    mapping ``{kind: openai | transformers, ...}`` handed to :func:`r1reward.judges.build_judge`."""
    if isinstance(spec, str):
        return build_judge(spec)
    spec = dict(spec)
    return build_judge(spec.pop("kind"), **spec)


def conversations(pairs: list) -> list[list[dict]]:
    """The Table-1 chat messages (images first) of each pair."""
    return [pair_messages(p) for p in pairs]


def sample_rollout(model, processor, pairs: list, cfg: RLConfig, seed: int) -> Rollout:
    """Sample ``cfg.samples_per_prompt`` judgments for each pair (Table-1 prompt with images)."""
    convs = conversations(pairs)
    k = int(cfg.samples_per_prompt)
    groups = generate(  # generate() samples in eval mode and restores the mode
        model,
        processor,
        convs,
        num_return_sequences=k,
        do_sample=True,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.rollout_batch_size,
        seed=seed,
        engine=cfg.engine,
        return_logprobs=cfg.old_logprobs == "sampler",
    )

    flat = [c for group in groups for c in group]
    assert len(flat) == len(pairs) * k, "rollout.generate returned the wrong number of samples"
    # A sampled vision token (<|image_pad|>, <|vision_start|>, ...) would make the scoring
    # forward pass look for an image that is not there; such a completion is cut just before it
    # (the kept prefix is exactly what was sampled) and scored on that prefix.
    model_config = getattr(model, "config", None)
    vision = {
        getattr(model_config, n, None)
        for n in (
            "image_token_id",
            "video_token_id",
            "vision_start_token_id",
            "vision_end_token_id",
        )
    }
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
    return make_rollout(
        processor,
        pairs,
        convs,
        ids,
        k,
        texts=texts,
        finish=finish,
        logprobs=None if any(lp is None for lp in logps) else logps,
    )


def make_rollout(
    processor,
    pairs: list,
    convs: list,
    token_ids: Sequence[Sequence[int]],
    k: int,
    *,
    texts: list[str] | None = None,
    finish: list[str] | None = None,
    logprobs: Sequence[Sequence[float]] | None = None,
) -> Rollout:
    """Tensors of a rollout from sampled token ids (``len(pairs) * k`` of them, the ``k``
    samples of pair ``i`` at rows ``i*k ... i*k+k-1``): each prompt encoded once with
    :func:`r1reward.rollout.encode`, completions right-padded with their mask; ``logprobs``
    (the sampler's, one per token) become :attr:`Rollout.old_logp`."""
    n = len(pairs) * k
    if len(token_ids) != n:
        raise ValueError(f"make_rollout: {len(token_ids)} completions for {len(pairs)} pairs x {k}")
    tok = getattr(processor, "tokenizer", processor)
    texts = (
        texts if texts is not None else [tok.decode(t, skip_special_tokens=True) for t in token_ids]
    )
    ids, mask = completion_tensors(token_ids, pad_token_id(processor))
    old = None
    if logprobs is not None:
        old = torch.zeros_like(mask)
        for i, lp in enumerate(logprobs):
            old[i, : len(lp)] = torch.tensor(list(lp), dtype=torch.float32)
        old = old * mask
    return Rollout(
        prompts=encode_each(processor, convs),
        k=k,
        ids=ids,
        mask=mask,
        texts=list(texts),
        labels=[int(pairs[j // k].preferred) for j in range(n)],
        finish=list(finish) if finish is not None else ["stop"] * n,
        pair_ids=[pairs[j // k].id for j in range(n)],
        old_logp=old,
    )


def score(ro: Rollout, judge, use_consistency: bool, images=None) -> dict[str, torch.Tensor]:
    """Reward parts ``[B]`` (Section 3.2): format, result, consistency and their combination.
    Without the consistency reward the combination sees consistency 0: ``Result + 0.5 Format``,
    and the judge is asked only when it is free to run (``judge.free``, the toy's rule judge:
    its verdicts are still logged); a model or paid judge is then not called and the
    consistency part is NaN. ``images``: one list per sample, for judges that look at them."""
    fmt = torch.tensor(rewards.format_rewards(ro.texts), dtype=torch.float32)
    res = torch.tensor(rewards.result_rewards(ro.texts, ro.labels), dtype=torch.float32)
    if use_consistency or getattr(judge, "free", False):
        cons = torch.tensor(consistency_rewards(judge, ro.texts, images), dtype=torch.float32)
    else:
        cons = torch.full_like(fmt, float("nan"))
    used = cons if use_consistency else torch.zeros_like(cons)
    total = torch.tensor(
        rewards.combine_batch(fmt.tolist(), res.tolist(), used.tolist()), dtype=torch.float32
    )
    return {"format": fmt, "result": res, "consistency": cons, "total": total}


def sample_images(batch: Sequence[Any], ro: Rollout) -> list[list]:
    """The images of each sample's pair (one list per sample), for a judge that looks at them."""
    return [list(batch[j // ro.k].images) for j in range(len(ro.texts))]
