"""The ``rl:`` section of a recipe: every knob of the RL trainer, and what each algorithm means.

:data:`ALGO_PRESETS` says what ``rl.algo`` switches on (StableReinforce, Reinforce++, GRPO and the
later fixes of the collapse lab); :class:`RLConfig` holds the section, and
:meth:`RLConfig.resolved` fills every ``None`` from the preset and checks the sizes once, at the
entry point (:func:`r1reward.train.rl.train_rl`, ``r1reward rl``). It lives with the other
sections (:mod:`r1reward.recipes.config`) because the recipe is checked when it loads.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from r1reward.recipes.fields import knob, section_from_dict, tracker_list

__all__ = ["ALGO_PRESETS", "PRESET_DEFAULTS", "RLConfig", "default_kl_kind"]

#: What each algorithm means. ``None`` in :class:`RLConfig` takes the value from here.
ALGO_PRESETS: dict[str, dict[str, Any]] = {
    # Section 3: Pre-Clip + Advantage Filter + consistency reward, one sample per prompt,
    # batch-normalised Reinforce++ returns with the KL inside the reward.
    "stable-reinforce": dict(
        pre_clip=True,
        advantage_filter=True,
        consistency_reward=True,
        samples_per_prompt=1,
        advantage="batch",
        kl_in="reward",
    ),
    # Reinforce++ (Hu et al. 2025) as the paper's baseline: same returns and normalisation, plain
    # exp(log-ratio), no filter, no consistency reward.
    "reinforce++": dict(
        pre_clip=False,
        advantage_filter=False,
        consistency_reward=False,
        samples_per_prompt=1,
        advantage="batch",
        kl_in="reward",
    ),
    # GRPO (Shao et al. 2024): group-normalised sequence advantages, KL (k3) in the loss.
    "grpo": dict(
        pre_clip=False,
        advantage_filter=False,
        consistency_reward=False,
        samples_per_prompt=4,
        advantage="group",
        kl_in="loss",
    ),
    # Later fixes of the same instabilities, on GRPO's groups (r1reward.algorithms, "later fixes"):
    # Dr. GRPO (Liu et al. 2025): advantages not divided by the group std, no 1/|o| per sequence.
    "dr-grpo": dict(
        pre_clip=False,
        advantage_filter=False,
        consistency_reward=False,
        samples_per_prompt=4,
        advantage="group-mean",
        kl_in="loss",
        length_norm=False,
    ),
    # DAPO's clip-higher (Yu et al. 2025): the upper PPO clip at 1.28, the lower at 0.8.
    "dapo-clip-higher": dict(
        pre_clip=False,
        advantage_filter=False,
        consistency_reward=False,
        samples_per_prompt=4,
        advantage="group",
        kl_in="loss",
        clip_eps_high=0.28,
    ),
    # GSPO (Zheng et al. 2025): one clipped, length-normalised importance ratio per sequence.
    "gspo": dict(
        pre_clip=False,
        advantage_filter=False,
        consistency_reward=False,
        samples_per_prompt=4,
        advantage="group",
        kl_in="loss",
        loss="gspo",
    ),
    # CISPO (MiniMax-M1 2025): clipped, stop-gradient importance weights on every token.
    "cispo": dict(
        pre_clip=False,
        advantage_filter=False,
        consistency_reward=False,
        samples_per_prompt=4,
        advantage="group",
        kl_in="loss",
        loss="cispo",
        clip_eps_high=0.28,
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

    algo: str = knob(
        "stable-reinforce",
        "stable-reinforce | reinforce++ | grpo | dr-grpo | "
        "dapo-clip-higher | gspo | cispo: the preset (ALGO_PRESETS) filling every null",
    )
    init_model: str | None = knob(None, "model folder or hub id to start from; null: model.path")
    steps: int = knob(20, "RL steps")
    prompts_per_step: int = knob(8, "prompts per process per RL step")
    samples_per_prompt: int | None = knob(
        None, "samples per prompt; null: the preset (1 for the Reinforce family, 4 for GRPO)"
    )
    mini_batch_size: int = knob(4, "samples per optimizer update (per process)")
    micro_batch_size: int = knob(2, "samples per forward/backward (per process)")
    ppo_epochs: int = knob(2, "passes over each step's samples")
    lr: float = knob(1e-5, "AdamW learning rate")
    weight_decay: float = knob(0.0, "AdamW weight decay")
    adam_betas: tuple[float, float] = knob((0.9, 0.999), "AdamW betas, [b1, b2]")
    max_grad_norm: float = knob(1.0, "gradient clipping norm")
    clip_eps: float = knob(
        0.2, "PPO clip epsilon (lower side, and upper when clip_eps_high is null)"
    )
    clip_eps_high: float | None = knob(
        None, "upper PPO clip epsilon; null: the preset (DAPO/CISPO 0.28, else clip_eps)"
    )
    loss: str | None = knob(
        None, "null: the preset; ppo (token-level, Pre-Clip-able), gspo or cispo"
    )
    length_norm: bool | None = knob(
        None, "average each sequence over its tokens; null: the preset (false: Dr. GRPO)"
    )
    pre_clip: bool | None = knob(None, "Pre-Clip (Sec. 3.2); null: the preset")
    pre_clip_low: float = knob(1e-3, "lower ratio bound of Pre-Clip, applied to the log-ratio")
    pre_clip_high: float = knob(1e3, "upper ratio bound of Pre-Clip, applied to the log-ratio")
    advantage_filter: bool | None = knob(None, "Advantage Filter (Sec. 3.2); null: the preset")
    filter_sigma: float = knob(3.0, "the filter zeroes standardised advantages beyond this")
    consistency_reward: bool | None = knob(
        None, "consistency reward from the judge (Sec. 3.3); null: the preset"
    )
    judge: str | dict = knob(
        "rule", "rule (the toy judge) or {kind: openai|transformers, ...} (r1reward.judges)"
    )
    kl_coef: float = knob(0.0, "KL coefficient to the initial model")
    kl_kind: str | None = knob(
        None,
        "KL estimator k1|k2|k3 where the KL enters (reward or loss) and in the log; null: "
        "k1 in the Reinforce family's reward, k3 in GRPO's loss (default_kl_kind)",
    )
    temperature: float = knob(1.0, "sampling temperature")
    top_p: float = knob(1.0, "nucleus sampling top-p")
    max_new_tokens: int = knob(64, "tokens per sampled judgment")
    rollout_batch_size: int = knob(8, "prompts per generate() call")
    engine: str = knob(
        "transformers",
        "transformers (generate), vllm (colocated engine with weight sync; CUDA "
        "+ the vllm package) or auto (vLLM when importable and the policy is on CUDA)",
    )
    vllm: dict | None = knob(None, "extra vllm.LLM arguments, e.g. {gpu_memory_utilization: 0.3}")
    old_logprobs: str = knob(
        "sampler",
        "where the old policy's log-probs come from: sampler (recorded while "
        "sampling; the transformers engine, else trainer) or trainer (a no-grad forward pass)",
    )
    data: dict | None = knob(None, "a data section for RL alone; null: the recipe's data section")
    min_difficulty: int | None = knob(
        None, "keep pairs with difficulty >= this (the hard subset); null: all"
    )
    swap_prob: float = knob(0.5, "present each pair in the swapped order with this probability")
    both_orders: bool = knob(
        False, "each step shows prompts_per_step / 2 pairs, each in both orders"
    )
    lora: dict | None = knob(None, "peft LoRA settings; null: model.lora")
    quantization: str | None = knob(None, "4bit (bitsandbytes QLoRA); null: model.quantization")
    gradient_checkpointing: bool = knob(False, "trade compute for activation memory")
    dtype: str | None = knob(None, "model dtype; null: model.dtype")
    freeze_vision: bool = knob(
        True, "train the language model on frozen visual features (as SFT does)"
    )
    seed: int = knob(0, "seed of sampling, shuffling and initialisation")
    save_every: int = knob(0, "checkpoint every N steps; 0: only at the end")
    save_total_limit: int = knob(2, "checkpoints kept (the oldest are removed)")
    report_to: list[str] = knob([], "accelerate trackers: [tensorboard] or [wandb]")
    stop_on_nonfinite: bool = knob(
        True, "stop (and say so) when the weights are no longer finite: such a model cannot sample"
    )
    stop_on_collapse: int = knob(
        0, "stop once this many steps in a row were collapsed (collapse_reason); 0: never"
    )
    collapse_min_well_formed: float = knob(
        0.5, "a step with a smaller share of well-formed samples is collapsed"
    )
    collapse_length_fraction: float = knob(
        0.9, "a step whose mean length reaches this x max_new_tokens is collapsed"
    )
    progress: bool = knob(True, "show a progress bar")

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
            raise ValueError(f"rl.engine={out.engine!r}: expected 'transformers', 'vllm' or 'auto'")
        if out.old_logprobs not in ("sampler", "trainer"):
            raise ValueError(
                f"rl.old_logprobs={out.old_logprobs!r}: expected 'sampler' or 'trainer'"
            )
        if out.vllm is not None and not isinstance(out.vllm, dict):
            raise ValueError(f"rl.vllm={out.vllm!r}: expected a mapping of vllm.LLM arguments")
        if preset["advantage"] != "batch" and out.samples_per_prompt < 2:
            raise ValueError(
                f"rl.samples_per_prompt must be >= 2 for {self.algo} (group statistics)"
            )
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
        return (
            (math.log(self.pre_clip_low), math.log(self.pre_clip_high)) if self.pre_clip else None
        )

    @classmethod
    def from_dict(cls, section: dict | None, *, source: str = "recipe") -> RLConfig:
        """The section as written in a recipe (lists where the dataclass has tuples; a single
        tracker name as ``report_to`` becomes a list). Unknown keys and values of the wrong type
        fail here in one line naming ``source`` and ``rl.key``
        (:func:`r1reward.recipes.fields.section_from_dict`)."""
        return section_from_dict(cls, tracker_list(section), "rl", source=source)
