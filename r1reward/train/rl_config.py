"""The ``rl:`` section of a recipe: every knob of the RL trainer, and what each algorithm means.

:data:`ALGO_PRESETS` says what ``rl.algo`` switches on (StableReinforce, Reinforce++, GRPO and the
later fixes of the collapse lab); :class:`RLConfig` holds the section, and
:meth:`RLConfig.resolved` fills every ``None`` from the preset and checks the sizes once, at the
entry point (:func:`r1reward.train.rl.train_rl`, ``r1reward rl``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from r1reward.recipes import check_section

__all__ = ["ALGO_PRESETS", "PRESET_DEFAULTS", "RLConfig", "default_kl_kind"]

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
        """The section as written in a recipe (lists where the dataclass has tuples); unknown keys
        fail here, naming the key (:func:`r1reward.recipes.check_section`)."""
        section = dict(section or {})
        check_section(cls, section, "rl")
        if "adam_betas" in section:
            section["adam_betas"] = tuple(section["adam_betas"])
        if isinstance(section.get("report_to"), str):
            section["report_to"] = [section["report_to"]] if section["report_to"] != "none" else []
        return cls(**section)
