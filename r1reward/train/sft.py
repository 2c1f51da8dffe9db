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

Entry points: :func:`train_sft` (``recipe -> model folder``) and ``r1reward sft``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from r1reward.prompt import build_messages, format_target, parse_judgment

__all__ = [
    "sft_examples",
    "build_dataset",
    "sft_config",
    "build_trainer",
    "freeze_vision",
    "train_sft",
    "judge_pairs",
    "peak_rss_mb",
    "load_pairs",
    "main",
]

LOG_NAME = "sft_log.jsonl"
SUMMARY_NAME = "sft_summary.json"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (``getrusage`` ``ru_maxrss``)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 / (1024 if sys.platform == "darwin" else 1)


def _messages(pair: Any) -> list[dict]:
    return build_messages(
        pair.question, pair.response_1, pair.response_2, images=pair.images, videos=pair.videos
    )


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
        msgs = _messages(pair)
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


def sft_config(section: dict, out_dir: str | Path, *, bf16: bool | None = None):
    """TRL ``SFTConfig`` from a recipe's ``sft`` section, with CPU-safe settings made explicit."""
    import torch
    from trl import SFTConfig

    cuda = torch.cuda.is_available()
    use_bf16 = bool(section.get("bf16", False)) if bf16 is None else bf16
    return SFTConfig(
        output_dir=str(out_dir),
        num_train_epochs=float(section.get("epochs", 1)),
        max_steps=int(section.get("max_steps", -1)),
        per_device_train_batch_size=int(section.get("batch_size", 8)),
        gradient_accumulation_steps=int(section.get("grad_accum", 1)),
        learning_rate=float(section.get("lr", 1e-4)),
        lr_scheduler_type=section.get("lr_scheduler", "linear"),
        warmup_steps=float(section.get("warmup_ratio", 0.0)),  # < 1: a fraction of the steps
        weight_decay=float(section.get("weight_decay", 0.0)),
        max_grad_norm=float(section.get("max_grad_norm", 1.0)),
        logging_steps=int(section.get("logging_steps", 10)),
        seed=int(section.get("seed", 0)),
        max_length=section.get("max_length"),
        completion_only_loss=True,  # labels -100 on the prompt (Table-1 text + image tokens)
        gradient_checkpointing=bool(section.get("gradient_checkpointing", False)),
        bf16=use_bf16 and cuda,
        fp16=False,
        use_cpu=not cuda,
        dataloader_num_workers=0,
        dataloader_pin_memory=cuda,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        remove_unused_columns=False,
        disable_tqdm=bool(section.get("disable_tqdm", False)),
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


def load_pairs(data: dict, split: str, *, curated_path: str | Path | None = None) -> list[Any]:
    """Pairs for a recipe's ``data`` section: the ``train`` or ``heldout`` side of its declared
    split (:func:`r1reward.data.splits.load_split`: the toy world's seed-disjoint splits, or a
    pairs file with ``data.heldout: PATH`` or a seeded ``data.heldout_fraction``, never trained
    on).

    For training (``split="train"``) the pairs are curated by the recipe's teacher
    (:func:`r1reward.curation.curate`, up to ``data.max_tries`` tries) into ``curated_path``
    (resumable JSONL); held-out pairs are returned as they are.
    """
    from r1reward.data.splits import load_split

    pairs = load_split(data, split)
    if split != "train" or curated_path is None:
        return list(pairs)
    from r1reward.curation import curate, make_teacher

    teacher = make_teacher(data.get("teacher") or {"kind": "toy"})
    return curate(pairs, teacher, curated_path, int(data.get("max_tries", 3)), progress=False)


def build_trainer(recipe: dict, *, out_dir: str | Path, pairs: Sequence[Any], model_path: str):
    """Load the model (LoRA/QLoRA per ``recipe["model"]``) and build the TRL ``SFTTrainer``.

    Returns ``(trainer, processor)``.
    """
    from trl import SFTTrainer

    from r1reward.models import load_model

    m = recipe["model"]
    model, processor = load_model(
        model_path,
        dtype=m.get("dtype"),
        lora=m.get("lora"),
        quantization=m.get("quantization"),
    )
    section = recipe["sft"]
    if section.get("freeze_vision"):
        freeze_vision(model)
    args = sft_config(section, out_dir, bf16=str(m.get("dtype")) in ("bfloat16", "bf16"))
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=build_dataset(pairs, processor),
        processing_class=processor,
    )
    return trainer, processor


def freeze_vision(model: Any) -> int:
    """Freeze the vision tower (``visual.*``, merger included); returns the number of tensors frozen.

    Common practice when fine-tuning Qwen2.5-VL, and on the toy it matters: with a randomly
    initialised tiny model, training the vision tower together with the language model lets the
    early text loss collapse the visual tokens into a nearly constant vector, whereas frozen
    random patch features keep the colour/shape information the judge has to read.
    """
    n = 0
    for name, param in model.named_parameters():
        if ".visual." in f".{name}":
            param.requires_grad_(False)
            n += 1
    return n


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
    from r1reward.rollout import generate

    outs = generate(
        model,
        processor,
        [_messages(p) for p in pairs],
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


def train_sft(recipe: dict, *, out_dir: str | Path, pairs: Sequence[Any] | None = None) -> Path:
    """Cold-start SFT per ``recipe``; writes a loadable model folder to ``out_dir``.

    Args:
        recipe: a loaded recipe (:func:`r1reward.recipes.load_recipe`).
        out_dir: the output folder: model weights (merged when LoRA), processor files,
            ``sft_log.jsonl`` (loss curve, one line per log step) and ``sft_summary.json``
            (steps, seconds, peak RSS).
        pairs: curated training pairs (with ``meta["teacher_analysis"]``); default: the recipe's
            data, curated by its teacher into ``out_dir/curated.jsonl``.

    Returns:
        ``out_dir`` as a ``Path``; ``load_model(out_dir)`` loads the fine-tuned judge.
    """
    from r1reward.recipes import resolve_model_path

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if pairs is None:
        pairs = load_pairs(recipe["data"], "train", curated_path=out_dir / "curated.jsonl")
    model_path = resolve_model_path(recipe)
    log_path = out_dir / LOG_NAME
    log_path.unlink(missing_ok=True)
    t0 = time.monotonic()
    trainer, processor = build_trainer(recipe, out_dir=out_dir, pairs=pairs, model_path=model_path)
    logger = _JsonlLogger(log_path)
    trainer.add_callback(logger.callback)
    result = trainer.train()
    model = trainer.model
    if hasattr(model, "merge_and_unload") and not recipe["model"].get("quantization"):
        model = model.merge_and_unload()
    if Path(model_path).is_dir():
        _copy_processor_files(Path(model_path), out_dir)
    else:
        processor.save_pretrained(out_dir)
    model.save_pretrained(out_dir)
    summary = {
        "model_path": model_path,
        "train_examples": len(trainer.train_dataset),
        "steps": result.global_step,
        "train_loss": result.training_loss,
        "train_seconds": round(time.monotonic() - t0, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "torch_threads": __import__("torch").get_num_threads(),
    }
    (out_dir / SUMMARY_NAME).write_text(json.dumps(summary, indent=2))
    return out_dir


def read_log(out_dir: str | Path) -> list[dict]:
    """The loss curve written by :func:`train_sft` (``sft_log.jsonl``)."""
    path = Path(out_dir) / LOG_NAME
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


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
            "  r1reward sft --recipe my.yaml --out runs/x model.path=artifacts/cpu/tiny-model"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--recipe", required=True, help="recipe name (toy-cpu, ...) or YAML path")
    parser.add_argument("--out", required=True, help="output folder for the fine-tuned model")
    parser.add_argument(
        "--eval", action="store_true", help="judge the held-out pairs afterwards and print"
    )
    parser.add_argument("overrides", nargs="*", help="dotted key=value recipe overrides")
    args = parser.parse_args(argv)
    from r1reward.recipes import load_recipe

    try:
        recipe = load_recipe(args.recipe, args.overrides)
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
    out = train_sft(recipe, out_dir=args.out)
    summary = json.loads((out / SUMMARY_NAME).read_text())
    print(json.dumps(summary, indent=2))
    if held is not None:
        from r1reward.models import load_model

        model, processor = load_model(str(out))
        rep = judge_pairs(
            model, processor, held, max_new_tokens=int(recipe["sft"].get("max_new_tokens", 256))
        )
        print(
            f"held-out: n={rep['n']} well-formed={rep['well_formed']:.3f} "
            f"accuracy={rep['accuracy']:.3f} peak_rss_mb={peak_rss_mb():.0f}"
        )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
