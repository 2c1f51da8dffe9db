"""What the trainers share (cold-start SFT, the scalar baseline, RL), so that none imports another.

* :func:`preflight` -- the recipe's model and data paths checked before any expensive work;
* :func:`refuse_used_out` -- a fresh SFT or scalar run does not silently overwrite an earlier one;
* :func:`load_for_training` -- the model to train, as the recipe's ``model`` section says;
* :func:`freeze_vision` -- train the language model on frozen visual features;
* :func:`peak_rss_mb` -- the memory figure the summaries report.

A pair's chat messages (SFT's prompt, RL's) are :func:`r1reward.prompt.pair_messages`.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path
from typing import Any

from r1reward.data.splits import is_placeholder
from r1reward.models import check_model_path, load_model
from r1reward.recipes.config import ModelConfig

__all__ = [
    "RUN_FILES",
    "freeze_vision",
    "load_for_training",
    "peak_rss_mb",
    "preflight",
    "refuse_used_out",
]

#: What a finished or started SFT / scalar run leaves in its folder (the SFT log and summary,
#: the weights or adapter, the scalar baseline's log and summary).
RUN_FILES = (
    "sft_summary.json",
    "sft_log.jsonl",
    "model.safetensors",
    "adapter_config.json",
    "scalar_summary.json",
    "scalar_log.jsonl",
)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (``getrusage`` ``ru_maxrss``)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 / (1024 if sys.platform == "darwin" else 1)


def load_for_training(
    model_path: str | Path,
    model_cfg: ModelConfig,
    *,
    dtype: Any = None,
    lora: Any = None,
    quantization: Any = None,
) -> tuple[Any, Any]:
    """``(model, processor)`` of ``model_path`` as the recipe's ``model`` section says: its dtype,
    LoRA/QLoRA and image pixel cap (:func:`r1reward.models.load_model`); ``dtype``, ``lora`` and
    ``quantization``, when given, replace the section's (RL's ``rl.*`` overrides)."""
    return load_model(
        str(model_path),
        dtype=dtype if dtype is not None else model_cfg.dtype,
        lora=lora if lora is not None else model_cfg.lora,
        quantization=quantization if quantization is not None else model_cfg.quantization,
        max_pixels=model_cfg.max_pixels,
    )


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


def preflight(recipe: dict, *, init_model: str | None = None) -> None:
    """The checks that can fail before expensive work (curation may call a paid teacher):
    ``model.path`` (or ``init_model``) is a model folder, an adapter folder or a Hub id, and
    the data files the ``data`` section names exist.

    Raises:
        FileNotFoundError: naming the recipe key and the path.
    """
    for key, path in (
        ("model.path", (recipe.get("model") or {}).get("path")),
        ("rl.init_model", init_model),
    ):
        if path:
            try:
                check_model_path(path)
            except FileNotFoundError as exc:
                raise FileNotFoundError(f"{key}: {exc}") from None
    data = recipe.get("data") or {}
    for key in ("source", "heldout"):
        value = data.get(key)
        if is_placeholder(value):
            raise FileNotFoundError(
                f"data.{key} is still the placeholder {value!r}: set it to a "
                f"pairs file, e.g. data.{key}=/data/pairs.jsonl"
            )
        if value and not (key == "source" and value == "toy") and not Path(value).exists():
            raise FileNotFoundError(f"data.{key}: {value}: no such file")


def refuse_used_out(out: str | Path, resume: bool, overwrite: bool) -> str | None:
    """The reason not to start a fresh run in ``out`` (it holds an earlier run's outputs and
    neither ``--resume`` nor ``--overwrite`` was given), else ``None``."""
    out = Path(out)
    used = [name for name in RUN_FILES if (out / name).exists()]
    used += sorted(p.name for p in out.glob("checkpoint-*"))[:1]
    if used and not (resume or overwrite):
        return (
            f"{out} holds an earlier run ({', '.join(used)}); pass --resume to continue it "
            "or --overwrite to replace it"
        )
    return None
