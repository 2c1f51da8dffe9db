"""The typed sections of a recipe: every key a recipe YAML may hold, its type, default and help.

One dataclass per section, in the style of TRL's config classes (every field declared once with a
``metadata={"help": ...}`` string, which is the recipe's documentation):

- ``model:`` :class:`ModelConfig` -- path or hub id, dtype, LoRA/QLoRA; ``model.tiny``
  (:class:`TinyModelConfig`) describes the tiny toy model built when ``path`` is null;
- ``data:`` :class:`DataConfig` -- the pairs, their held-out split, the curating teacher;
- ``sft:`` :class:`SFTConfig` -- cold-start long-CoT SFT (paper Sec. 4.3, ``r1reward sft``);
- ``scalar:`` :class:`ScalarConfig` -- the Bradley-Terry baseline (``r1reward scalar``);
- ``rl:`` :class:`~r1reward.recipes.rl.RLConfig` -- StableReinforce and the other algorithms
  (Sec. 3, ``r1reward rl``), defined in :mod:`r1reward.recipes.rl` with its presets;
- ``eval:`` :class:`EvalConfig` -- the evaluation the recipe was sized for;
- ``lab:`` :class:`LabSection` -- the collapse lab's declared grid (``r1reward lab``);
- ``hardware:`` :class:`HardwareConfig` -- the GPUs a scale recipe's batch sizes were chosen for.

:func:`resolve_recipe` turns a loaded recipe (a dict) into a :class:`RecipeConfig`;
:func:`r1reward.recipes.load_recipe` calls it on every load, so an unknown key or a value of the
wrong type -- in the file or in a command-line override -- fails at once, in one line naming the
recipe, ``section.key`` and the expected type. Defaults are what the trainers use when a recipe
leaves a key out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from r1reward.recipes.fields import Section, knob, section_from_dict, tracker_list
from r1reward.recipes.rl import RLConfig

__all__ = [
    "DataConfig",
    "EvalConfig",
    "HardwareConfig",
    "LabSection",
    "ModelConfig",
    "RLConfig",
    "RecipeConfig",
    "SECTIONS",
    "ScalarConfig",
    "SFTConfig",
    "TinyModelConfig",
    "resolve_recipe",
]


@dataclass
class TinyModelConfig(Section):
    """``model.tiny``: the tiny Qwen2.5-VL built locally when ``model.path`` is null
    (:func:`r1reward.recipes.resolve_model_path`)."""

    key: ClassVar[str] = "model.tiny"

    size: str = knob("tiny", "preset size of r1reward.toy.tiny_model.build_tiny_model")
    seed: int = knob(0, "seed of the initial weights")
    pretrain_steps: int | None = knob(
        None, "caption-pretraining steps (r1reward.toy.pretrain); null or 0: none"
    )
    pretrain_lr: float | None = knob(None, "caption-pretraining learning rate")
    pretrain_batch_size: int | None = knob(None, "captioned scenes per pretraining step")
    pretrain_text_batch_size: int | None = knob(None, "analysis-shaped texts per pretraining step")


@dataclass
class ModelConfig(Section):
    """``model:`` the judge to train: a folder or hub id, its dtype and LoRA/QLoRA."""

    key: ClassVar[str] = "model"

    path: str | None = knob(
        None, "model folder or hub id; null: build the tiny model described by model.tiny"
    )
    tiny: TinyModelConfig | None = knob(None, "the tiny model built when path is null")
    dtype: str | None = knob(None, "float32 | bfloat16 | float16; null: the loader's default")
    lora: dict | None = knob(None, "peft.LoraConfig fields (r, lora_alpha, ...); null: no LoRA")
    quantization: str | None = knob(None, "4bit: NF4 through bitsandbytes (QLoRA, CUDA only)")
    max_pixels: int | None = knob(
        None, "cap on the pixels of each image given to the processor; null: its default"
    )


@dataclass
class DataConfig(Section):
    """``data:`` the preference pairs (r1reward.data.splits) and the teacher that curates them."""

    key: ClassVar[str] = "data"

    source: str = knob(
        "toy", "a generated source (toy) or a pairs file in any format r1reward.data.load reads"
    )
    train_pairs: int | None = knob(
        None, "training pairs; null: 64 of a generated source, the whole file otherwise"
    )
    heldout_pairs: int | None = knob(
        None, "held-out pairs; null: 32 of a generated source, all declared ones otherwise"
    )
    heldout: str | None = knob(None, "held-out pairs file, never trained on (r1reward.data.splits)")
    heldout_fraction: float | None = knob(
        None, "seeded share of the data.source file held out and never trained on"
    )
    seed: int = knob(0, "seed of the generated pairs and of the held-out fraction")
    image_size: int = knob(56, "side in pixels of a generated source's images")
    teacher: dict | None = knob(
        None,
        "the curating teacher, {kind: toy|openai, ...} (r1reward.curation.make_teacher); "
        "null: {kind: toy}",
    )
    max_tries: int = knob(
        3, "teacher tries per pair (paper Sec. 4.3: 3); the tries needed are the pair's difficulty"
    )


@dataclass
class SFTConfig(Section):
    """``sft:`` cold-start long-CoT SFT with TRL's SFTTrainer (paper Sec. 4.3)."""

    key: ClassVar[str] = "sft"

    epochs: float = knob(1.0, "passes over the curated pairs")
    max_steps: int = knob(-1, "optimizer steps; > 0 overrides epochs")
    lr: float = knob(1e-4, "peak learning rate")
    batch_size: int = knob(8, "pairs per device per forward/backward")
    grad_accum: int = knob(1, "forward/backward passes per optimizer step")
    max_length: int | None = knob(None, "tokens per example (longer are cut); null: no cap")
    warmup_ratio: float = knob(0.0, "warm-up: a fraction of the steps when < 1, else steps")
    weight_decay: float = knob(0.0, "AdamW weight decay")
    max_grad_norm: float = knob(1.0, "gradient clipping norm")
    lr_scheduler: str = knob("linear", "transformers scheduler name (linear, cosine, ...)")
    gradient_checkpointing: bool = knob(False, "trade compute for activation memory")
    freeze_vision: bool = knob(False, "train the language model on frozen visual features")
    bf16: bool = knob(
        False, "bfloat16 mixed precision (CUDA only; also on when model.dtype is bfloat16)"
    )
    logging_steps: int = knob(10, "optimizer steps between loss log lines (sft_log.jsonl)")
    seed: int = knob(0, "seed of the trainer (shuffling, initialisation)")
    max_new_tokens: int = knob(256, "tokens per held-out judgment after training (--eval)")
    report_to: list[str] = knob([], "transformers trackers, e.g. [tensorboard] or [wandb]")
    save_steps: int = knob(0, "checkpoint every N optimizer steps (0: only the final model)")
    save_total_limit: int | None = knob(None, "checkpoints kept (the oldest are removed)")
    disable_tqdm: bool = knob(False, "hide the trainer's progress bar")

    @classmethod
    def from_dict(cls, section: dict | None, *, source: str = "recipe") -> SFTConfig:
        """The ``sft:`` section (a single tracker name or ``none`` as ``report_to`` is read as
        a list); unknown keys and wrong types fail naming ``sft.key``."""
        return section_from_dict(cls, tracker_list(section), "sft", source=source)


@dataclass
class ScalarConfig(Section):
    """``scalar:`` the Bradley-Terry reward model baseline (r1reward.train.scalar)."""

    key: ClassVar[str] = "scalar"

    epochs: int = knob(1, "passes over the training pairs")
    lr: float = knob(1e-4, "AdamW learning rate, decayed linearly to 0")
    batch_size: int = knob(8, "pairs per optimizer step")
    seed: int = knob(0, "seed of the head's initialisation and the shuffling")
    freeze_vision: bool = knob(False, "train on frozen visual features")
    max_length: int | None = knob(
        None,
        "not applied by the trainer (rows are not cut); the dry run's memory estimate "
        "assumes it, 2048 when null",
    )


@dataclass
class EvalConfig(Section):
    """``eval:`` the evaluation a recipe was sized for. The evaluator does not read this section:
    pass the values to ``r1reward eval --batch-size/--max-new-tokens`` (whose defaults are the
    ones here)."""

    key: ClassVar[str] = "eval"

    heldout_pairs: int | None = knob(None, "held-out pairs the recipe's evaluation judges")
    batch_size: int = knob(8, "prompts per generate call")
    max_new_tokens: int = knob(256, "tokens per judgment")


@dataclass
class LabSection(Section):
    """``lab:`` the collapse lab's grid, declared before any of its runs; the lab reads it through
    :func:`r1reward.lab.lab_section`, which also checks known variants, the regime and non-empty
    lists."""

    key: ClassVar[str] = "lab"

    variants: list[str] = knob(
        ["reinforce++", "stable-reinforce"], "RL variants (r1reward.chapters.experiments.VARIANTS)"
    )
    lrs: list[float] = knob([1e-4], "learning rates swept")
    seeds: list[int] = knob([0], "seeds of every (variant, lr)")
    regime: str = knob(
        "late",
        "training pairs: late (those the cold-start model already judges right in both "
        "orders, Sec. 3.1), hard (the curated hard pairs, Sec. 4.1) or all",
    )
    candidate_pairs: int = knob(256, "training pairs the late regime picks from")
    steps: int = knob(16, "RL steps of each run")
    samples_per_step: int = knob(
        32, "samples per step per process; prompts = samples_per_step / samples_per_prompt"
    )
    rl: dict[str, Any] = knob({}, "further rl.* settings for every run (checked as rl keys)")
    heldout_pairs: int = knob(100, "held-out pairs, judged in both orders")
    workers: int = knob(1, "runs side by side (one torch thread each)")
    collapse_min_well_formed: float = knob(
        0.5, "a step with a smaller share of well-formed samples is collapsed"
    )
    collapse_length_fraction: float = knob(
        0.9, "a step whose mean length reaches this x max_new_tokens is collapsed"
    )
    stop_after_collapsed: int = knob(
        0, "stop a run once it was collapsed this many steps in a row; 0: run every step"
    )


@dataclass
class HardwareConfig(Section):
    """``hardware:`` what a scale recipe's batch sizes were chosen for (r1reward.scaling)."""

    key: ClassVar[str] = "hardware"

    gpus: int = knob(1, "GPUs (processes) the recipe was sized for")
    gpu_memory_gib: float | None = knob(None, "memory of each GPU in GiB")
    shape: str | None = knob(
        None, "r1reward.scaling.qwen25_vl_config size of model.path (3b, 7b), for the dry run"
    )
    accelerate_config: str | None = knob(
        None,
        "accelerate config name or path (r1reward.recipes.accelerate_config); null: one process",
    )


#: ``section name -> its dataclass``, in the order a recipe lists them.
SECTIONS: dict[str, type] = {
    "hardware": HardwareConfig,
    "model": ModelConfig,
    "data": DataConfig,
    "sft": SFTConfig,
    "scalar": ScalarConfig,
    "eval": EvalConfig,
    "rl": RLConfig,
    "lab": LabSection,
}


@dataclass
class RecipeConfig:
    """A whole recipe, every section typed (a section the file leaves out takes its defaults)."""

    name: str | None = knob(None, "the recipe's name (the file stem when absent)")
    hardware: HardwareConfig | None = knob(None, HardwareConfig.__doc__)
    model: ModelConfig = knob(None, ModelConfig.__doc__)
    data: DataConfig = knob(None, DataConfig.__doc__)
    sft: SFTConfig = knob(None, SFTConfig.__doc__)
    scalar: ScalarConfig = knob(None, ScalarConfig.__doc__)
    eval: EvalConfig = knob(None, EvalConfig.__doc__)
    rl: RLConfig = knob(None, RLConfig.__doc__)
    lab: LabSection | None = knob(None, LabSection.__doc__)


def resolve_recipe(recipe: dict, *, source: str | None = None) -> RecipeConfig:
    """Every section of a loaded recipe as its dataclass (absent sections take their defaults;
    ``hardware`` and ``lab`` stay ``None`` when absent). ``lab.rl`` is checked as ``rl`` keys,
    ``rl.data`` as a ``data`` section.

    Raises:
        ValueError: one line naming the recipe (``source``, else its name), ``section.key`` and
            what was expected: an unknown section or key, or a value of the wrong type.
    """
    source = source or f"recipe {recipe.get('name')!r}"
    unknown = [k for k in recipe if k != "name" and k not in SECTIONS]
    if unknown:
        raise ValueError(
            f"{source}: unknown section {unknown[0]!r}; a recipe has: name, {', '.join(SECTIONS)}"
        )
    out = {k: cls.from_dict(recipe.get(k), source=source) for k, cls in SECTIONS.items()}
    for optional in ("hardware", "lab"):
        if recipe.get(optional) is None:
            out[optional] = None
    if out["lab"] is not None:
        section_from_dict(RLConfig, out["lab"].rl, "lab.rl", source=source)
    if out["rl"].data is not None:
        section_from_dict(DataConfig, out["rl"].data, "rl.data", source=source)
    return RecipeConfig(name=recipe.get("name"), **out)
