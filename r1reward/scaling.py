"""Sizes and memory of the real Qwen2.5-VL models, computed from their configs (no download).

The "Scaling up" chapter needs two kinds of figures: those measured on a GPU (``benchmarks/
bench_gpu_scale.py``) and, where no GPU was available to the build, estimates worked out on paper.
This module holds the paper side: the exact architecture of Qwen2.5-VL-3B/7B-Instruct (from their
published ``config.json``), an exact parameter count obtained by instantiating the model on the
``meta`` device (no memory, no weights), and a transparent memory model for LoRA, QLoRA and full
training under ZeRO-3 / FSDP. Every number it returns is an *estimate* and is labelled so.
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import asdict, dataclass

GiB = 1024**3

# Published architecture of the Instruct checkpoints (config.json on the Hub). Vision towers are
# the same for both sizes except for the projection into the language model (out_hidden_size).
QWEN25_VL_SHAPES: dict[str, dict] = {
    "3b": {
        "text": dict(
            hidden_size=2048,
            intermediate_size=11008,
            num_hidden_layers=36,
            num_attention_heads=16,
            num_key_value_heads=2,
            vocab_size=151936,
            tie_word_embeddings=True,
        ),
        "vision": dict(
            depth=32,
            hidden_size=1280,
            intermediate_size=3420,
            num_heads=16,
            out_hidden_size=2048,
            fullatt_block_indexes=[7, 15, 23, 31],
            window_size=112,
        ),
    },
    "7b": {
        "text": dict(
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            vocab_size=152064,
            tie_word_embeddings=False,
        ),
        "vision": dict(
            depth=32,
            hidden_size=1280,
            intermediate_size=3420,
            num_heads=16,
            out_hidden_size=3584,
            fullatt_block_indexes=[7, 15, 23, 31],
            window_size=112,
        ),
    },
}

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def qwen25_vl_config(size: str = "7b", token_ids: dict[str, int] | None = None):
    """A ``Qwen2_5_VLConfig`` with the exact shape of Qwen2.5-VL-{3B,7B}-Instruct (built locally).

    ``token_ids`` (``<|image_pad|>``, ``<|video_pad|>``, ``<|vision_start|>``, ``<|vision_end|>``,
    ``<|endoftext|>``, ``<|im_end|>`` -> id) lets a benchmark pair the real shape with another
    tokenizer (the tiny one), so a randomly initialised 7B-shaped model runs with no download.
    """
    from transformers import Qwen2_5_VLConfig

    if size not in QWEN25_VL_SHAPES:
        raise ValueError(f"unknown size {size!r}; expected one of {sorted(QWEN25_VL_SHAPES)}")
    shape = QWEN25_VL_SHAPES[size]
    text = dict(
        shape["text"],
        rms_norm_eps=1e-6,
        max_position_embeddings=128000,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
    )
    tie = text.pop("tie_word_embeddings")
    ids: dict = {}
    if token_ids:
        ids = dict(
            image_token_id=token_ids["<|image_pad|>"],
            video_token_id=token_ids["<|video_pad|>"],
            vision_start_token_id=token_ids["<|vision_start|>"],
            vision_end_token_id=token_ids["<|vision_end|>"],
        )
        text.update(
            bos_token_id=token_ids["<|endoftext|>"],
            eos_token_id=token_ids["<|im_end|>"],
            pad_token_id=token_ids["<|endoftext|>"],
        )
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=dict(shape["vision"], tokens_per_second=2),
        tie_word_embeddings=tie,
        **ids,
    )


@dataclass(frozen=True)
class ParamCount:
    """Parameter counts of one architecture, split the way memory is spent."""

    total: int
    vision: int
    embeddings: int  # input embeddings + lm_head (counted once when tied)
    decoder_linear: int  # nn.Linear weights inside the language decoder (what 4-bit quantises)
    lora_per_rank: int  # trainable LoRA parameters per unit of rank on LORA_TARGETS


def count_parameters(config) -> ParamCount:
    """Exact counts, by building the model on the ``meta`` device (allocates nothing)."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(config)
    total = sum(p.numel() for p in model.parameters())
    vision = sum(p.numel() for n, p in model.named_parameters() if ".visual." in f".{n}")
    emb = model.get_input_embeddings().weight.numel()
    head = model.get_output_embeddings().weight
    if head is not model.get_input_embeddings().weight:
        emb += head.numel()
    linear = 0
    lora = 0
    for name, module in model.named_modules():
        if (
            isinstance(module, torch.nn.Linear)
            and ".visual." not in f".{name}"
            and "lm_head" not in name
        ):
            linear += module.weight.numel()
            if name.rsplit(".", 1)[-1] in LORA_TARGETS:
                lora += module.in_features + module.out_features
    return ParamCount(total, vision, emb, linear, lora)


@dataclass(frozen=True)
class MemoryEstimate:
    """Per-GPU memory for one training step, in GiB. An estimate, not a measurement."""

    mode: str
    gpus: int
    weights: float
    trainable_params_m: float
    grads_and_optimizer: float
    activations: float
    logits: float
    total: float

    def as_row(self) -> dict:
        return {k: (round(v, 1) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def estimate_training_memory(
    counts: ParamCount,
    config,
    *,
    mode: str,
    gpus: int = 1,
    tokens: int = 2048,
    micro_batch: int = 1,
    lora_rank: int = 64,
    gradient_checkpointing: bool = True,
) -> MemoryEstimate:
    """Worked-out memory for one micro-batch, per GPU (GiB).

    Assumptions (the usual accounting, e.g. the ZeRO paper's 16 bytes per trained parameter):

    - ``lora``: bf16 weights (2 B/param); LoRA adapters trained in fp32 with AdamW
      (weights 4 + grads 4 + two moments 8 = 16 B per adapter parameter).
    - ``qlora``: decoder linear layers in NF4 (0.5 B/param plus ~3 % for block scales), vision
      tower and embeddings in bf16; adapters as in ``lora``.
    - ``full``: bf16 weights and grads, fp32 master copy and AdamW moments (2+2+4+8 = 16 B/param),
      sharded over ``gpus`` by ZeRO-3 / FSDP FULL_SHARD (activations are not sharded).
    - Activations with gradient checkpointing: each decoder layer keeps its bf16 input
      (tokens x hidden x 2 B), plus one layer recomputed in full (about 34 x tokens x hidden x 2 B
      for attention + MLP buffers, and 3 x tokens x intermediate x 2 B for the gated MLP).
      Without checkpointing every layer keeps the full set.
    - Logits: fp32 tokens x vocab for the loss (4 B), twice (logits and their gradient).
    """
    if mode not in ("lora", "qlora", "full"):
        raise ValueError(f"mode must be lora, qlora or full, not {mode!r}")
    text = config.text_config
    h, inter, layers, vocab = (
        text.hidden_size,
        text.intermediate_size,
        text.num_hidden_layers,
        text.vocab_size,
    )
    n_tok = tokens * micro_batch
    if mode == "full":
        weights = 2 * counts.total / gpus
        trainable = counts.total
        states = 14 * counts.total / gpus
    else:
        if mode == "lora":
            weights = 2 * counts.total
        else:
            rest = counts.total - counts.decoder_linear
            weights = 0.5 * 1.03 * counts.decoder_linear + 2 * rest
        trainable = lora_rank * counts.lora_per_rank
        states = 16 * trainable
    per_layer_full = 34 * n_tok * h * 2 + 3 * n_tok * inter * 2
    if gradient_checkpointing:
        acts = layers * n_tok * h * 2 + per_layer_full
    else:
        acts = layers * per_layer_full
    logits = 2 * n_tok * vocab * 4
    total = weights + states + acts + logits
    return MemoryEstimate(
        mode=mode,
        gpus=gpus,
        weights=weights / GiB,
        trainable_params_m=trainable / 1e6,
        grads_and_optimizer=states / GiB,
        activations=acts / GiB,
        logits=logits / GiB,
        total=total / GiB,
    )


def kv_cache_bytes_per_token(config, dtype_bytes: int = 2) -> int:
    """KV-cache bytes per generated or prompt token during rollout (keys + values, all layers)."""
    text = config.text_config
    head_dim = text.hidden_size // text.num_attention_heads
    return 2 * text.num_hidden_layers * text.num_key_value_heads * head_dim * dtype_bytes


def max_rollout_batch(
    config, counts: ParamCount, *, gpu_gib: float, tokens: int, quant: bool = False
) -> int:
    """How many sequences of ``tokens`` fit in the KV cache after the weights (estimate, 10 % slack)."""
    weights = (
        (0.5 * 1.03 * counts.decoder_linear + 2 * (counts.total - counts.decoder_linear))
        if quant
        else 2 * counts.total
    )
    free = 0.9 * gpu_gib * GiB - weights
    return max(0, math.floor(free / (kv_cache_bytes_per_token(config) * tokens)))


def largest_micro_batch(
    counts: ParamCount,
    config,
    *,
    mode: str,
    gpu_gib: float,
    gpus: int = 1,
    tokens: int = 2048,
    headroom: float = 0.9,
    limit: int = 64,
    **kwargs,
) -> int:
    """The largest micro-batch whose :func:`estimate_training_memory` total stays under
    ``headroom * gpu_gib`` (the rest is left for the CUDA context, allocator fragmentation and
    the rollout's KV cache); 0 when not even one sequence of ``tokens`` fits. An estimate.

    The GPU recipes (``r1reward/recipes/qwen2.5-vl-*.yaml``) pick their micro-batch sizes at or
    below this value for the card named in their ``hardware`` section.
    """
    best = 0
    for micro in range(1, limit + 1):
        est = estimate_training_memory(
            counts, config, mode=mode, gpus=gpus, tokens=tokens, micro_batch=micro, **kwargs
        )
        if est.total > headroom * gpu_gib:
            break
        best = micro
    return best


def recipe_mode(recipe: dict) -> str:
    """``"qlora"``, ``"lora"`` or ``"full"``: how a recipe trains its model (``model`` section)."""
    model = recipe.get("model") or {}
    if model.get("quantization"):
        return "qlora"
    return "lora" if model.get("lora") else "full"


# --------------------------------------------------------------------------------------------
# tables for the "Scaling up" chapter
# --------------------------------------------------------------------------------------------


def recipe_row(recipe: dict) -> dict:
    """One line of the recipes-side-by-side table: model, how it trains, batch sizes, launcher."""
    model, sft, rl = recipe.get("model") or {}, recipe.get("sft") or {}, recipe.get("rl") or {}
    hw = recipe.get("hardware") or {}
    lora = model.get("lora") or {}
    gpus = int(hw.get("gpus", 1))
    return {
        "recipe": recipe.get("name"),
        "model": model.get("path") or f"tiny ({(model.get('tiny') or {}).get('size', 'tiny')})",
        "training": recipe_mode(recipe) + (f" r={lora['r']}" if lora.get("r") else ""),
        "dtype": model.get("dtype"),
        "target": f"{gpus} x {hw['gpu_memory_gib']} GB" if hw else "CPU / see file",
        "sft micro-batch": sft.get("batch_size"),
        "sft grad accum": sft.get("grad_accum"),
        "sft effective batch": gpus * int(sft.get("batch_size", 1)) * int(sft.get("grad_accum", 1)),
        "sft lr": sft.get("lr"),
        "rl micro-batch": rl.get("micro_batch_size"),
        "rl mini-batch": rl.get("mini_batch_size"),
        "rl lr": rl.get("lr"),
        "grad ckpt": bool(sft.get("gradient_checkpointing")),
        "judge": rl.get("judge") if isinstance(rl.get("judge"), str) else rl["judge"].get("kind"),
        "accelerate config": (hw.get("accelerate_config") or "none (1 process)").rsplit("/", 1)[-1],
    }


def flatten(tree: dict, prefix: str = "") -> dict:
    """``{"sft": {"lr": 1}}`` -> ``{"sft.lr": 1}`` (the dotted keys that overrides use)."""
    out: dict = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def recipe_diff(a: dict, b: dict) -> list[dict]:
    """Every dotted key whose value differs between recipes ``a`` and ``b`` (or exists in one).

    Returns rows ``{"key", a["name"], b["name"]}`` sorted by key; ``"-"`` marks a missing key.
    """
    fa, fb = flatten(a), flatten(b)
    na, nb = str(a.get("name", "a")), str(b.get("name", "b"))
    rows = []
    for key in sorted(set(fa) | set(fb)):
        va, vb = fa.get(key, "-"), fb.get(key, "-")
        if key != "name" and va != vb:
            rows.append({"key": key, na: va, nb: vb})
    return rows


#: (label, mode, gpus) of the chapter's memory table.
SETUPS: tuple[tuple[str, str, int], ...] = (
    ("LoRA, 1 GPU", "lora", 1),
    ("QLoRA, 1 GPU", "qlora", 1),
    ("full, 1 GPU", "full", 1),
    ("full, 8 GPUs (ZeRO-3/FSDP)", "full", 8),
)


@functools.cache
def exact_shape(size: str) -> tuple[object, ParamCount]:
    """``(config, counts)`` of Qwen2.5-VL-``size``, built once per process (meta device)."""
    config = qwen25_vl_config(size)
    return config, count_parameters(config)


def memory_rows(
    sizes: tuple[str, ...] = ("3b", "7b"),
    *,
    tokens: int = 4096,
    micro_batch: int = 1,
    setups: tuple[tuple[str, str, int], ...] = SETUPS,
) -> list[dict]:
    """The estimate of :func:`estimate_training_memory` for each size and setup (GiB per GPU).

    Every row carries ``"source": "estimate"``: these are worked out on paper, not measured.
    """
    rows = []
    for size in sizes:
        config, counts = exact_shape(size)
        for label, mode, gpus in setups:
            est = estimate_training_memory(
                counts, config, mode=mode, gpus=gpus, tokens=tokens, micro_batch=micro_batch
            )
            rows.append(
                {
                    "model": f"Qwen2.5-VL-{size.upper()}",
                    "setup": label,
                    **est.as_row(),
                    "source": "estimate",
                }
            )
    return rows


def rollout_rows(
    sizes: tuple[str, ...] = ("3b", "7b"),
    *,
    tokens: int = 2048,
    gpu_gib: tuple[float, ...] = (24, 40, 80),
) -> list[dict]:
    """KV-cache bytes per token and how many ``tokens``-long sequences fit after the weights
    (bf16, and 4-bit) on each card size. Estimates (10 % slack, no training state resident)."""
    rows = []
    for size in sizes:
        config, counts = exact_shape(size)
        for quant in (False, True):
            row = {
                "model": f"Qwen2.5-VL-{size.upper()}",
                "weights": "4-bit" if quant else "bf16",
                "KV MiB / token": round(kv_cache_bytes_per_token(config) / 2**20, 3),
            }
            for gib in gpu_gib:
                row[f"seqs on {gib:g} GB"] = max_rollout_batch(
                    config, counts, gpu_gib=gib, tokens=tokens, quant=quant
                )
            rows.append(row)
    return rows


def load_measurements(
    folder: str | os.PathLike = "runs/scale", *, gpu_only: bool = True
) -> list[dict]:
    """Rows measured by ``benchmarks/bench_gpu_scale.py`` (``folder/scale-SIZE-MODES.json``),
    flattened for a table, each with the device and the command that produced it; ``[]`` when
    nothing was measured. ``gpu_only`` drops the CPU dry runs (``--size tiny`` on a machine
    without a GPU)."""
    from pathlib import Path

    rows = []
    for path in sorted(Path(folder).glob("scale-*.json")):
        data = json.loads(path.read_text())
        if gpu_only and str(data.get("device", "cpu")) == "cpu":
            continue
        for r in data.get("rows", []):
            row = {
                "size": data.get("size", path.stem.removeprefix("scale-")),
                "mode": r.get("mode"),
                "device": data.get("device"),
                "source": "measured",
            }
            if "error" in r:
                row["error"] = r["error"]
            elif r.get("mode") == "engines":  # transformers vs vLLM rollout, same model and seed
                for engine, label in (
                    ("transformers", "rollout tok/s"),
                    ("vllm", "vLLM rollout tok/s"),
                ):
                    e = r.get(engine, {})
                    row[label] = e.get("tokens_per_s", e.get("error"))
            else:
                row.update(
                    {
                        "weights GiB": r["weights_gib"],
                        "rollout tok/s": r["rollout"]["tokens_per_s"],
                        "rollout peak GiB": r["rollout"]["peak_gib"],
                        "SFT step tok/s": r["sft_step"]["tokens_per_s"],
                        "SFT step peak GiB": r["sft_step"]["peak_gib"],
                        "RL step tok/s": r["rl_step"]["tokens_per_s"],
                        "RL step peak GiB": r["rl_step"]["peak_gib"],
                    }
                )
            row["command"] = data.get("command", "benchmarks/bench_gpu_scale.py")
            rows.append(row)
    return rows


def recipe_fit(recipe: dict) -> dict | None:
    """For a recipe with a ``hardware`` section: the largest micro-batch the estimate allows on
    its card at ``sft.max_length`` tokens per row, beside the micro-batches the recipe chose and
    the estimated GiB at its SFT micro-batch; ``None`` for recipes without ``hardware``."""
    hw = recipe.get("hardware")
    if not hw:
        return None
    config, counts = exact_shape(hw["shape"])
    mode, tokens = recipe_mode(recipe), int(recipe["sft"]["max_length"])
    kwargs = dict(
        mode=mode,
        gpus=int(hw["gpus"]),
        tokens=tokens,
        lora_rank=int((recipe["model"].get("lora") or {}).get("r", 64)),
    )
    chosen = estimate_training_memory(
        counts, config, micro_batch=recipe["sft"]["batch_size"], **kwargs
    )
    return {
        "recipe": recipe.get("name"),
        "card": f"{hw['gpus']} x {hw['gpu_memory_gib']} GB",
        "mode": mode,
        "tokens/row": tokens,
        "largest that fits (est.)": largest_micro_batch(
            counts, config, gpu_gib=float(hw["gpu_memory_gib"]), **kwargs
        ),
        "sft micro-batch": recipe["sft"]["batch_size"],
        "rl micro-batch": recipe["rl"]["micro_batch_size"],
        "GiB at sft micro-batch (est.)": round(chosen.total, 1),
    }
