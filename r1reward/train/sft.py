"""Cold-start long-CoT SFT (paper Sec. 4.3) with TRL's ``SFTTrainer``.

Before RL, R1-Reward fine-tunes Qwen2.5-VL-7B on teacher traces: the input is the Table-1 prompt
with the image(s), the target is the teacher's analysis and verdict,
``<think>{analysis}</think><answer>{preferred}</answer>`` followed by the end-of-turn token.
The loss is on the completion only (prompt tokens carry label -100).

The dataset is TRL's *prompt-completion* format with images: ``prompt`` is the chat-templated
user turn (ending in the assistant header), ``completion`` the target plus the template's
end-of-turn text, ``images`` the PIL images. TRL's vision collator tokenises prompt and completion
separately and masks the prompt, so the same code trains the tiny toy model on CPU and a real
Qwen2.5-VL-7B with LoRA/QLoRA (``model.lora`` / ``model.quantization`` in the recipe) on a GPU.

Entry points: :func:`train_sft` (typed settings, a model path and pairs -> model folder;
:func:`sft_inputs` resolves a recipe into them, once) and ``r1reward sft``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from r1reward import curation
from r1reward.data import PreferencePair
from r1reward.data.jsonl import read_jsonl
from r1reward.data.splits import load_split
from r1reward.models import load_model, merge_adapter
from r1reward.prompt import format_target, pair_messages, parse_judgment
from r1reward.recipes import load_recipe, resolve_model_path, save_recipe
from r1reward.recipes.config import DataConfig, ModelConfig, SFTConfig
from r1reward.rollout import generate
from r1reward.train.common import (
    freeze_vision,
    load_for_training,
    peak_rss_mb,
    preflight,
    refuse_used_out,
)

__all__ = [
    "sft_examples",
    "build_dataset",
    "sft_config",
    "build_trainer",
    "resume_checkpoint",
    "sft_inputs",
    "train_sft",
    "judge_pairs",
    "load_pairs",
    "main",
]

LOG_NAME = "sft_log.jsonl"
SUMMARY_NAME = "sft_summary.json"


def _pair_target(pair: Any) -> str | None:
    """``<think>analysis</think><answer>preferred</answer>`` from the curated analysis, if any."""
    analysis = (pair.meta or {}).get("teacher_analysis")
    if not analysis:
        return None
    return format_target(analysis, pair.preferred)


def sft_examples(pairs: Sequence[Any], processor: Any) -> list[dict]:
    """Prompt-completion examples: ``{"prompt": str, "completion": str, "images": [PIL]}``.

    ``prompt`` is the chat template applied to the Table-1 user turn with the generation prompt;
    ``completion`` is what the template renders after it for an assistant turn holding the target
    (so it ends with the end-of-turn token the model must learn to emit). Pairs without an
    accepted teacher analysis (difficulty 4) are skipped.

    Raises:
        ValueError: the chat template renders a conversation that does not start with the prompt.
    """
    out = []
    for pair in pairs:
        target = _pair_target(pair)
        if target is None:
            continue
        msgs = pair_messages(pair)
        prompt = processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        full = processor.apply_chat_template(
            [*msgs, {"role": "assistant", "content": [{"type": "text", "text": target}]}],
            tokenize=False,
        )
        if not full.startswith(prompt) or target not in full[len(prompt) :]:
            raise ValueError(
                f"pair {pair.id}: the chat template does not render the assistant turn after "
                "the generation prompt; cannot split prompt and completion"
            )
        images = [img.convert("RGB") if hasattr(img, "convert") else img for img in pair.images]
        out.append({"prompt": prompt, "completion": full[len(prompt) :], "images": images})
    return out


def build_dataset(pairs: Sequence[Any], processor: Any):
    """A ``datasets.Dataset`` of :func:`sft_examples` (images stored as the ``Image`` feature)."""
    import datasets

    examples = sft_examples(pairs, processor)
    if not examples:
        raise ValueError("SFT: no pair has a teacher analysis to train on")
    return datasets.Dataset.from_list(examples)


def sft_config(section: SFTConfig | dict, out_dir: str | Path, *, bf16: bool | None = None):
    """TRL's ``SFTConfig`` from a recipe's ``sft`` section, with CPU-safe settings made explicit.

    ``section`` is the typed section (:class:`r1reward.recipes.config.SFTConfig`) or the mapping
    a recipe holds. ``report_to`` (trackers), ``save_steps`` and ``save_total_limit``
    (checkpoints for ``--resume``) come from the section; by default nothing is reported and no
    checkpoint is written."""
    import torch
    from trl import SFTConfig as TRLSFTConfig

    cfg = section if isinstance(section, SFTConfig) else SFTConfig.from_dict(section)
    # float(): an integer passes a number field as written (sft.lr: 1); TRL wants floats
    cuda = torch.cuda.is_available()
    use_bf16 = cfg.bf16 if bf16 is None else bf16
    return TRLSFTConfig(
        output_dir=str(out_dir),
        num_train_epochs=float(cfg.epochs),
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=float(cfg.lr),
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=float(cfg.warmup_ratio),  # < 1: a fraction of the steps
        weight_decay=float(cfg.weight_decay),
        max_grad_norm=float(cfg.max_grad_norm),
        logging_steps=cfg.logging_steps,
        seed=cfg.seed,
        max_length=cfg.max_length,
        completion_only_loss=True,  # labels -100 on the prompt (Table-1 text + image tokens)
        gradient_checkpointing=cfg.gradient_checkpointing,
        bf16=use_bf16 and cuda,
        fp16=False,
        use_cpu=not cuda,
        dataloader_num_workers=0,
        dataloader_pin_memory=cuda,
        report_to=list(cfg.report_to) or "none",
        # checkpoints every sft.save_steps optimizer steps for --resume (none by default)
        save_strategy="steps" if cfg.save_steps > 0 else "no",
        save_steps=cfg.save_steps or 500,
        save_total_limit=cfg.save_total_limit,
        eval_strategy="no",
        remove_unused_columns=False,
        disable_tqdm=cfg.disable_tqdm,
    )


class _JsonlLogger:
    """A ``TrainerCallback`` appending every log (loss, lr, grad norm) as one JSON line."""

    def __init__(self, path: Path):
        from transformers import TrainerCallback

        self.path = path
        self.t0 = time.monotonic()
        outer = self

        class Callback(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                rec = {"step": state.global_step, "epoch": state.epoch, **(logs or {})}
                rec["elapsed_s"] = round(time.monotonic() - outer.t0, 3)
                with outer.path.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(rec) + "\n")

        self.callback = Callback()


def load_pairs(
    data: dict, split: str, *, curated_path: str | Path | None = None, retry_failed: bool = True
) -> list[Any]:
    """Pairs for a recipe's ``data`` section: the ``train`` or ``heldout`` side of its declared
    split (:func:`r1reward.data.splits.load_split`: the toy world's seed-disjoint splits, or a
    pairs file with ``data.heldout: PATH`` or a seeded ``data.heldout_fraction``, never trained
    on).

    For training (``split="train"``) the pairs are curated by the recipe's teacher
    (:func:`r1reward.curation.curate`, up to ``data.max_tries`` tries) into ``curated_path``
    (resumable JSONL; ``retry_failed=False`` reads it without asking the teacher again for pairs
    it failed on); held-out pairs are returned as they are.
    """
    pairs = load_split(data, split)
    if split != "train" or curated_path is None:
        return list(pairs)
    cfg = DataConfig.from_dict(data)
    teacher = curation.make_teacher(cfg.teacher or {"kind": "toy"})
    return curation.curate(
        pairs, teacher, curated_path, cfg.max_tries, progress=False, retry_failed=retry_failed
    )


def build_trainer(
    cfg: SFTConfig,
    *,
    model_cfg: ModelConfig,
    model_path: str,
    out_dir: str | Path,
    pairs: Sequence[PreferencePair],
):
    """Load ``model_path`` (LoRA/QLoRA per ``model_cfg``, the recipe's ``model`` section) and
    build the TRL ``SFTTrainer`` of the ``sft`` settings ``cfg`` on ``pairs``.

    Returns ``(trainer, processor)``.
    """
    from trl import SFTTrainer

    model, processor = load_for_training(model_path, model_cfg)
    if cfg.freeze_vision:
        freeze_vision(model)
    args = sft_config(cfg, out_dir, bf16=str(model_cfg.dtype) in ("bfloat16", "bf16"))
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=build_dataset(pairs, processor),
        processing_class=processor,
    )
    return trainer, processor


def _copy_processor_files(src: Path, dst: Path) -> None:
    """Copy tokenizer/processor files of a local model folder (not weights or model config)."""
    skip = {"config.json", "generation_config.json"}
    for f in src.iterdir():
        if f.name in skip or f.name.startswith("r1reward_"):  # build markers stay behind
            continue
        if f.is_file() and not f.name.endswith((".safetensors", ".bin")):
            if f.name.endswith((".json", ".jinja", ".txt", ".model", ".tiktoken")):
                shutil.copy2(f, dst / f.name)


def judge_pairs(
    model: Any,
    processor: Any,
    pairs: Sequence[Any],
    *,
    max_new_tokens: int = 256,
    batch_size: int = 16,
    progress: bool = False,
) -> dict[str, Any]:
    """Greedy Table-1 judgments on ``pairs``: well-formed rate and accuracy (answer == label).

    Returns ``{"n", "well_formed", "accuracy", "answered", "texts"}``; an output without a usable
    verdict counts as wrong.
    """
    outs = generate(
        model,
        processor,
        [pair_messages(p) for p in pairs],
        do_sample=False,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        progress=progress,
    )
    texts = [group[0].text for group in outs]
    judgments = [parse_judgment(t) for t in texts]
    n = max(1, len(pairs))
    return {
        "n": len(pairs),
        "well_formed": sum(j.well_formed for j in judgments) / n,
        "accuracy": sum(j.answer == p.preferred for j, p in zip(judgments, pairs)) / n,
        "answered": sum(j.answer is not None for j in judgments) / n,
        "texts": texts,
    }


def _distributed() -> bool:
    """Launched as one of several processes (``accelerate launch`` / ``torchrun``)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _curated_pairs(data: dict, out_dir: Path) -> list[Any]:
    """The training pairs of the recipe's ``data`` section, curated once into
    ``out_dir/curated.jsonl``: with several processes the main one curates (the teacher may be a
    paid API) while the others wait, then they read its file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "curated.jsonl"
    if not _distributed():
        return load_pairs(data, "train", curated_path=path)
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    with state.main_process_first():
        return load_pairs(data, "train", curated_path=path, retry_failed=state.is_main_process)


def _last_checkpoint(out_dir: Path) -> Path | None:
    found = sorted(out_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return found[-1] if found else None


def resume_checkpoint(out_dir: str | Path, resume: bool) -> Path | None:
    """The checkpoint a run in ``out_dir`` continues from: the last ``checkpoint-*`` with
    ``resume``, else ``None``.

    Raises:
        FileNotFoundError: ``resume`` without a checkpoint in ``out_dir``.
    """
    checkpoint = _last_checkpoint(Path(out_dir)) if resume else None
    if resume and checkpoint is None:
        raise FileNotFoundError(
            f"--resume: {out_dir} holds no checkpoint-* folder (set sft.save_steps > 0 to write "
            "them); nothing to resume"
        )
    return checkpoint


def _save_model(trainer: Any, out_dir: Path, model_section: ModelConfig) -> None:
    """Save the trained model through the trainer's accelerator, so DeepSpeed ZeRO-3 and FSDP
    shards are gathered into one full state dict (main process writes). A LoRA model is saved
    as its adapter (``out_dir/adapter``) and merged into a full model on the main process; a
    4-bit (QLoRA) model stays an adapter folder in ``out_dir``."""
    quantized = bool(model_section.quantization)
    acc = trainer.accelerator
    model = acc.unwrap_model(trainer.model)
    state_dict = acc.get_state_dict(trainer.model)  # gathered (ZeRO-3 / FSDP); None off-main
    main = acc.is_main_process
    if hasattr(model, "merge_and_unload") and not quantized:
        adapter = out_dir / "adapter"
        model.save_pretrained(adapter, state_dict=state_dict, is_main_process=main)
        acc.wait_for_everyone()
        if main:
            merge_adapter(adapter, out_dir, dtype=model_section.dtype)
            shutil.rmtree(adapter)
    else:
        model.save_pretrained(
            out_dir, state_dict=state_dict, is_main_process=main, save_function=acc.save
        )
    acc.wait_for_everyone()


def sft_inputs(
    recipe: dict,
    *,
    out_dir: str | Path | None = None,
    pairs: Sequence[PreferencePair] | None = None,
) -> dict[str, Any]:
    """The keyword arguments of :func:`train_sft` for a loaded recipe, resolved once here: the
    ``sft`` and ``model`` sections, the model path (:func:`r1reward.recipes.resolve_model_path`,
    which builds the tiny model when ``model.path`` is null), the training pairs and the recipe
    as the run's record. ``pairs`` default: the recipe's data curated by its teacher into
    ``out_dir/curated.jsonl`` (once, by the main process, when several are launched).
    ``train_sft(**sft_inputs(recipe, out_dir=out), out_dir=out)`` runs the recipe.

    Raises:
        ValueError: neither ``pairs`` nor ``out_dir``; a bad section.
    """
    cfg = SFTConfig.from_dict(recipe.get("sft"))
    if pairs is None:
        if out_dir is None:
            raise ValueError("sft_inputs: give the pairs, or out_dir to curate them into")
        pairs = _curated_pairs(recipe["data"], Path(out_dir))
    return {
        "cfg": cfg,
        "model_cfg": ModelConfig.from_dict(recipe.get("model")),
        "model_path": resolve_model_path(recipe),
        "pairs": pairs,
        "record": recipe,
    }


def train_sft(
    cfg: SFTConfig,
    *,
    model_cfg: ModelConfig,
    model_path: str,
    pairs: Sequence[PreferencePair],
    out_dir: str | Path,
    resume: bool = False,
    record: dict | None = None,
) -> Path:
    """Cold-start SFT with the ``sft`` settings ``cfg``; writes a loadable model folder to ``out_dir``.

    Args:
        cfg: the recipe's ``sft`` section.
        model_cfg: the recipe's ``model`` section (dtype, LoRA/QLoRA, max_pixels).
        model_path: the model folder or hub id to fine-tune.
        pairs: curated training pairs (with ``meta["teacher_analysis"]``; :func:`sft_inputs`
            curates a recipe's).
        out_dir: the output folder: model weights (merged when LoRA), processor files,
            ``sft_log.jsonl`` (loss curve, one line per log step), ``sft_summary.json``
            (steps, seconds, peak RSS) and ``recipe.yaml`` (``record``).
        resume: continue from the last ``checkpoint-*`` in ``out_dir`` (``sft.save_steps`` > 0
            writes them).
        record: the recipe the run came from, written as ``recipe.yaml`` for the record.

    ``train_sft(**sft_inputs(recipe, out_dir=out), out_dir=out)`` runs a loaded recipe.

    Returns:
        ``out_dir`` as a ``Path``; ``load_model(out_dir)`` loads the fine-tuned judge.

    Raises:
        FileNotFoundError: ``resume`` without a checkpoint in ``out_dir``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = resume_checkpoint(out_dir, resume)
    log_path = out_dir / LOG_NAME
    if checkpoint is None:  # a fresh run: an earlier run's checkpoints must not be resumed later
        log_path.unlink(missing_ok=True)
        for old in out_dir.glob("checkpoint-*"):
            shutil.rmtree(old)
    t0 = time.monotonic()
    trainer, processor = build_trainer(
        cfg, model_cfg=model_cfg, model_path=model_path, out_dir=out_dir, pairs=pairs
    )
    logger = _JsonlLogger(log_path)
    main = trainer.accelerator.is_main_process
    if main:
        trainer.add_callback(logger.callback)
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    _save_model(trainer, out_dir, model_cfg)
    if not main:
        return out_dir
    if Path(model_path).is_dir():
        _copy_processor_files(Path(model_path), out_dir)
    else:
        processor.save_pretrained(out_dir)
    if record is not None:
        save_recipe(record, out_dir)
    summary = {
        "model_path": model_path,
        "train_examples": len(trainer.train_dataset),
        "steps": result.global_step,
        "train_loss": result.training_loss,
        "train_seconds": round(time.monotonic() - t0, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "torch_threads": __import__("torch").get_num_threads(),
        "processes": trainer.accelerator.num_processes,
        "resumed_from": str(checkpoint) if checkpoint else None,
    }
    (out_dir / SUMMARY_NAME).write_text(json.dumps(summary, indent=2))
    return out_dir


def read_log(out_dir: str | Path) -> list[dict]:
    """The loss curve written by :func:`train_sft` (``sft_log.jsonl``)."""
    path = Path(out_dir) / LOG_NAME
    return list(read_jsonl(path))


def main(argv: list[str] | None = None) -> int:
    """``r1reward sft``: see ``r1reward sft --help``."""
    parser = argparse.ArgumentParser(
        prog="r1reward sft",
        description=(
            "Cold-start long-CoT SFT (R1-Reward Sec. 4.3) with TRL's SFTTrainer: Table-1 prompt "
            "with image -> teacher analysis + verdict, loss on the completion only. The recipe's "
            "data section names the pairs and the teacher that curates them."
        ),
        epilog=(
            "examples:\n"
            "  r1reward sft --recipe toy-cpu --out runs/sft-toy\n"
            "  r1reward sft --recipe qwen2.5-vl-7b-lora --out runs/sft-7b sft.lr=2e-5 sft.epochs=2\n"
            "  r1reward sft --recipe my.yaml --out runs/x model.path=artifacts/cpu/tiny-model\n"
            "  r1reward sft --recipe toy-ci --out runs/x data.source=pairs.jsonl "
            "data.heldout_fraction=0.1 --eval"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--recipe", required=True, help="recipe name (toy-cpu, ...) or YAML path")
    parser.add_argument("--out", required=True, help="output folder for the fine-tuned model")
    parser.add_argument(
        "--eval", action="store_true", help="judge the held-out pairs afterwards and print"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the last checkpoint-* in --out (written every sft.save_steps)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="train into an --out that holds an earlier run (its curated pairs are reused)",
    )
    parser.add_argument("overrides", nargs="*", help="dotted key=value recipe overrides")
    args = parser.parse_args(argv)

    try:
        recipe = load_recipe(args.recipe, args.overrides)
        section = SFTConfig.from_dict(recipe.get("sft"))
        preflight(recipe)  # model and data paths, before any (paid) curation
        reason = refuse_used_out(args.out, args.resume, args.overwrite)
        if reason:
            raise ValueError(reason)
    except (KeyError, ValueError, FileNotFoundError) as exc:
        print(f"r1reward sft: {exc}", file=sys.stderr)
        return 2
    held = None
    if args.eval:  # the held-out split is checked before training, not after
        try:
            held = load_pairs(recipe["data"], "heldout")
        except (ValueError, FileNotFoundError) as exc:
            print(f"r1reward sft: {exc}", file=sys.stderr)
            return 2
    try:
        resume_checkpoint(args.out, args.resume)  # before any (paid) curation
        inputs = sft_inputs(recipe, out_dir=args.out)
    except (FileNotFoundError, KeyError, ValueError) as exc:  # no checkpoint; a bad model or data
        print(f"r1reward sft: {exc}", file=sys.stderr)
        return 2
    out = train_sft(**inputs, out_dir=args.out, resume=args.resume)
    if int(os.environ.get("RANK", "0")) != 0:  # the main process reports (and evaluates)
        return 0
    summary = json.loads((out / SUMMARY_NAME).read_text())
    print(json.dumps(summary, indent=2))
    if held is not None:
        model, processor = load_model(str(out))
        rep = judge_pairs(model, processor, held, max_new_tokens=section.max_new_tokens)
        print(
            f"held-out: n={rep['n']} well-formed={rep['well_formed']:.3f} "
            f"accuracy={rep['accuracy']:.3f} peak_rss_mb={peak_rss_mb():.0f}"
        )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
