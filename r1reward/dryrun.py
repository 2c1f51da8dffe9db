"""``--dry-run`` for the commands that need a GPU: ``sft``, ``scalar``, ``rl`` and ``eval``.

A dry run resolves the recipe and overrides exactly as the command would, builds the model on
the ``meta`` device (shapes only: no weights are read, nothing is allocated, nothing is
downloaded), applies the recipe's LoRA and frozen vision tower to count the trainable
parameters, and prints the plan: model, parameters trainable/total, data sources, steps and
batch sizes, processes, output folder and an estimated memory per GPU
(:mod:`r1reward.scaling`, the same accounting the "Scaling up" chapter uses). It exits 0; a
wrong recipe key, value or accelerate config exits 2 with one line, as the real command would.

The model's architecture comes from, in order: the ``config.json`` of a local folder (a model
or the base model of an adapter), the Hugging Face cache (``local_files_only``), or -- for the
published Qwen2.5-VL Hub ids -- the exact shape :mod:`r1reward.scaling` carries
(``hardware.shape`` in the GPU recipes). Anything else is reported as "needs the model's
config.json" rather than fetched. Data files that are not on this machine are listed as missing
without failing the plan, so a plan can be made before the data is copied over.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from r1reward.data import load
from r1reward.data.sources import is_generated
from r1reward.data.splits import is_placeholder
from r1reward.engines import resolve_engine
from r1reward.evaluate import build_parser
from r1reward.models import adapter_base, is_adapter
from r1reward.recipes import accelerate_config, load_recipe
from r1reward.scaling import (
    count_parameters,
    estimate_training_memory,
    kv_cache_bytes_per_token,
    qwen25_vl_config,
    recipe_mode,
)
from r1reward.train.common import freeze_vision as freeze
from r1reward.train.rl import RLConfig

__all__ = ["COMMANDS", "main", "model_config", "plan", "format_plan"]

#: The commands that take ``--dry-run`` (through :mod:`r1reward.cli`).
COMMANDS: tuple[str, ...] = ("sft", "scalar", "rl", "eval")

_HUB_SHAPES = {"qwen/qwen2.5-vl-3b-instruct": "3b", "qwen/qwen2.5-vl-7b-instruct": "7b"}


def model_config(path: str, *, shape: str | None = None) -> tuple[Any, str]:
    """``(config, where it came from)`` for a model folder, adapter folder or Hub id, offline.

    Raises:
        FileNotFoundError: no local config and no known shape (says how to provide one).
    """
    from transformers import AutoConfig

    folder = Path(path)
    if folder.is_dir() and is_adapter(folder):
        path = adapter_base(folder)
        folder = Path(path)
    if (folder / "config.json").is_file():
        return AutoConfig.from_pretrained(folder), f"{folder / 'config.json'}"
    try:
        return AutoConfig.from_pretrained(path, local_files_only=True), "the Hugging Face cache"
    except (OSError, ValueError):
        pass
    size = _HUB_SHAPES.get(str(path).lower())
    where = f"r1reward.scaling's Qwen2.5-VL-{(size or '').upper()} shape"
    if size is None and shape:
        size = shape
        where = f"not on this machine; the recipe's hardware.shape {shape}, from r1reward.scaling"
    if size:
        return qwen25_vl_config(size), where
    raise FileNotFoundError(
        f"{path}: a dry run needs the model's config.json and downloads nothing; copy the model "
        f"folder here, or fetch only its config (`huggingface-cli download {path} config.json`)"
    )


def _meta_model(config: Any, model_section: dict, *, freeze_vision: bool) -> tuple[int, int]:
    """``(trainable, total)`` parameters of the model the recipe trains, built on ``meta``
    (cached per architecture and LoRA settings: peft's wrapping of a 7B takes seconds)."""
    lora = model_section.get("lora")
    key = json.dumps([config.to_json_string(), lora, freeze_vision], sort_keys=True, default=str)
    if key not in _COUNTS:
        _COUNTS[key] = _meta_counts(config, lora, freeze_vision)
    return _COUNTS[key]


_COUNTS: dict[str, tuple[int, int]] = {}


def _meta_counts(config: Any, lora: Any, freeze_vision: bool) -> tuple[int, int]:
    import torch
    from transformers import AutoModelForImageTextToText

    from r1reward.models import _lora_config

    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    if lora:
        from peft import get_peft_model

        model = get_peft_model(model, _lora_config(lora))
        total = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
    elif freeze_vision:
        freeze(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def _processes(accelerate: str | None) -> tuple[int, str]:
    if not accelerate:
        return 1, "one process"
    import yaml

    path = accelerate_config(accelerate)
    conf = yaml.safe_load(path.read_text()) or {}
    n = int(conf.get("num_processes", 1)) * int(conf.get("num_machines", 1))
    return n, f"{n} processes, {conf.get('distributed_type', '?')} ({path.name})"


def _data(section: dict) -> dict[str, str]:

    out = {}
    for key in ("source", "heldout"):
        value = section.get(key)
        if value is None:
            continue
        if is_placeholder(value):
            out[key] = f"{value!r} (placeholder: set data.{key}=PATH)"
        elif is_generated(str(value)) or Path(str(value)).exists():
            out[key] = str(value)
        else:
            out[key] = f"{value} (not on this machine)"
    if section.get("heldout_fraction") and not section.get("heldout"):
        out["heldout"] = f"a seeded {section['heldout_fraction']:g} of data.source"
    return out


def _memory(
    config: Any, recipe: dict, *, gpus: int, tokens: int, micro: int, checkpointing: bool
) -> str:

    mode = recipe_mode(recipe)
    rank = int(((recipe.get("model") or {}).get("lora") or {}).get("r", 64))
    est = estimate_training_memory(
        count_parameters(config),
        config,
        mode=mode,
        gpus=gpus,
        tokens=tokens,
        micro_batch=micro,
        lora_rank=rank,
        gradient_checkpointing=checkpointing,
    )
    return (
        f"~{est.total:.1f} GiB per GPU ({mode}: weights {est.weights:.1f}, grads+optimizer "
        f"{est.grads_and_optimizer:.1f}, activations {est.activations:.1f}, logits "
        f"{est.logits:.1f}; {tokens} tokens x micro-batch {micro}; estimate, "
        "r1reward.scaling)"
    )


def _train_parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"r1reward {command} --dry-run")
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--out", default=None)
    parser.add_argument("--accelerate-config", default=None)
    parser.add_argument("--algo", default=None)
    for flag in ("--resume", "--overwrite", "--eval"):
        parser.add_argument(flag, action="store_true")
    parser.add_argument("overrides", nargs="*")
    return parser


def plan(command: str, argv: list[str]) -> dict[str, Any]:
    """The plan of ``r1reward COMMAND ARGV`` (without ``--dry-run``), as an ordered dict.

    Raises:
        KeyError, ValueError: a bad recipe key or value (as the command reports them).
        FileNotFoundError: an unknown accelerate config, or no config for the model.
    """
    if command == "eval":
        return _eval_plan(argv)
    if command not in COMMANDS:
        raise ValueError(f"{command}: --dry-run is for {', '.join(COMMANDS)}")

    args = _train_parser(command).parse_args(argv)
    overrides = list(args.overrides) + ([f"rl.algo={args.algo}"] if args.algo else [])
    recipe = load_recipe(args.recipe, overrides)
    model_section = dict(recipe.get("model") or {})
    section = dict(recipe.get(command) or {})
    gpus, launcher = _processes(args.accelerate_config)
    out: dict[str, Any] = {"command": f"r1reward {command}", "recipe": recipe.get("name")}
    path = model_section.get("path")
    if command == "rl":
        cfg = RLConfig.from_dict(recipe.get("rl")).resolved()
        path = cfg.init_model or path
        if cfg.lora is not None:
            model_section["lora"] = cfg.lora
        if cfg.quantization is not None:
            model_section["quantization"] = cfg.quantization
        section = {
            "freeze_vision": cfg.freeze_vision,
            "gradient_checkpointing": cfg.gradient_checkpointing,
        }
    if not path:
        path = "the tiny model (model.tiny, built on first use)"
        config, where = None, "built locally on first use"
    else:
        hw_shape = (recipe.get("hardware") or {}).get("shape")
        try:
            config, where = model_config(str(path), shape=hw_shape)
        except FileNotFoundError:
            if not (command == "rl" and model_section.get("path")):
                raise
            # rl.init_model is a run that does not exist yet: its base has the same shape
            config, where = model_config(str(model_section["path"]))
            where += f", the shape of model.path ({path} is not on this machine)"
    out["model"] = f"{path} [config: {where}]"
    out["dtype"] = model_section.get("dtype") or "float32"
    quant = model_section.get("quantization")
    out["training"] = (
        "QLoRA (4-bit)" if quant else "LoRA" if model_section.get("lora") else "full fine-tuning"
    )
    if config is not None:
        trainable, total = _meta_model(
            config, model_section, freeze_vision=bool(section.get("freeze_vision", False))
        )
        out["parameters"] = (
            f"{trainable:,} trainable of {total:,} ({100 * trainable / max(total, 1):.2f} %)"
        )
    out["data"] = _data(dict(recipe.get("data") or {}))
    out["processes"] = launcher
    if command == "rl":
        k = cfg.samples_per_prompt
        out["algorithm"] = (
            f"{cfg.algo} (pre_clip={cfg.pre_clip}, advantage_filter="
            f"{cfg.advantage_filter}, consistency_reward={cfg.consistency_reward})"
        )
        out["steps"] = (
            f"{cfg.steps} steps x {cfg.prompts_per_step} prompts x {k} samples per "
            f"process ({cfg.prompts_per_step * k * gpus} judgments per step), "
            f"mini-batch {cfg.mini_batch_size}, micro-batch {cfg.micro_batch_size}, "
            f"{cfg.ppo_epochs} PPO epoch(s), lr {cfg.lr:g}"
        )
        out["rollouts"] = (
            f"engine {cfg.engine}, up to {cfg.max_new_tokens} new tokens at "
            f"temperature {cfg.temperature:g}"
        )
        judge = cfg.judge if isinstance(cfg.judge, dict) else {"kind": cfg.judge}
        out["judge"] = str(judge.get("kind")) if cfg.consistency_reward else "not used"
        tokens = int((recipe.get("sft") or {}).get("max_length", 2048))
        micro, ckpt = cfg.micro_batch_size, cfg.gradient_checkpointing
    else:
        batch = int(section.get("batch_size", 1))
        accum = int(section.get("grad_accum", 1))
        steps = int(section.get("max_steps", -1))
        length = f"{steps} steps" if steps > 0 else f"{section.get('epochs', 1)} epoch(s)"
        out["steps"] = (
            f"{length}, batch {batch} x grad_accum {accum} x {gpus} processes = "
            f"{batch * accum * gpus} pairs per optimizer step, lr "
            f"{float(section.get('lr', 0)):g}"
        )
        tokens = int(section.get("max_length", 2048))
        micro, ckpt = batch, bool(section.get("gradient_checkpointing", False))
    default_out = f"runs/rl-{Path(args.recipe).stem}-{cfg.algo}" if command == "rl" else None
    out["output"] = args.out or default_out
    if config is not None and hasattr(config, "text_config"):
        out["memory"] = _memory(
            config, recipe, gpus=gpus, tokens=tokens, micro=micro, checkpointing=ckpt
        )
    return out


def _eval_plan(argv: list[str]) -> dict[str, Any]:

    args = build_parser().parse_args(argv)
    out: dict[str, Any] = {"command": "r1reward eval"}
    ks = list(args.k)
    orders = 2 if args.orders == "both" else 1
    n_pairs: int | None = None
    data = Path(args.data)
    if data.exists():
        n_pairs = len(load(args.data, args.format, image_root=args.image_root))
        if args.limit is not None:
            n_pairs = min(n_pairs, args.limit)
        out["data"] = f"{args.data}: {n_pairs} pairs ({args.format})"
    else:
        out["data"] = f"{args.data} ({args.format}; not on this machine: not read in a dry run)"
    per_unit = 1 + (max(ks) if max(ks) > 1 else 0)
    if n_pairs is not None:
        units = n_pairs * orders
        out["judgments"] = (
            f"{units} units ({orders} order(s)) x {per_unit} generations "
            f"(greedy + K={max(ks)}) = {units * per_unit}, up to "
            f"{args.max_new_tokens} new tokens each"
        )
    else:
        out["judgments"] = (
            f"pairs x {orders} order(s) x {per_unit} generations, up to "
            f"{args.max_new_tokens} new tokens each"
        )
    if args.model.startswith("const:"):
        out["model"] = f"{args.model} (a constant judge: no model)"
    else:
        config, where = model_config(args.model)
        out["model"] = f"{args.model} [config: {where}]"
        try:
            engine = resolve_engine(args.engine)
        except ImportError:
            engine = "vllm (not installed here)"
        out["engine"] = f"{engine} (--engine {args.engine})"
        _, total = _meta_model(config, {}, freeze_vision=False)
        out["parameters"] = f"{total:,}"
        if hasattr(config, "text_config"):
            width = {"bfloat16": 2, "float16": 2}.get(args.dtype or "", 4)
            weights = width * total / 2**30
            seqs = args.batch_size * per_unit
            kv = kv_cache_bytes_per_token(config, width) * (args.max_new_tokens + 2048) * seqs
            out["memory"] = (
                f"~{weights + kv / 2**30:.1f} GiB (weights {weights:.1f} in "
                f"{args.dtype or 'float32'}, KV cache {kv / 2**30:.1f} for "
                f"{seqs} sequences of up to 2,048 prompt + {args.max_new_tokens} "
                "new tokens; estimate)"
            )
    out["batch"] = f"{args.batch_size} prompts per generate call, K = {','.join(map(str, ks))}"
    out["output"] = args.out
    return out


def format_plan(p: dict[str, Any]) -> str:
    """The plan as aligned ``key: value`` lines (nested dicts indented)."""
    width = max(map(len, p)) + 1
    lines = []
    for key, value in p.items():
        if isinstance(value, dict):
            lines.append(f"{key + ':':<{width}}")
            lines += [f"  {k}: {v}" for k, v in value.items()] or ["  (none)"]
        else:
            lines.append(f"{key + ':':<{width}} {value}")
    return "\n".join(lines)


def main(command: str, argv: list[str]) -> int:
    """Print the plan of ``r1reward COMMAND ARGV --dry-run``; 0, or 2 with one line on error."""
    try:
        p = plan(command, argv)
    except (KeyError, ValueError, FileNotFoundError, TypeError) as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        print(f"r1reward {command} --dry-run: {text}", file=sys.stderr)
        return 2
    print(
        f"dry run: nothing trained, loaded or downloaded (model built on the meta device)\n"
        f"{format_plan(p)}"
    )
    return 0
