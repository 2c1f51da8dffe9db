"""Sizes and memory of the real Qwen2.5-VL models, computed from their configs (no download).

The "Scaling up" chapter needs two kinds of figures: those measured on a GPU (``benchmarks/
bench_gpu_scale.py``) and, where no GPU was available to the build, estimates worked out on paper.
This module holds the paper side: the exact architecture of Qwen2.5-VL-3B/7B-Instruct (from their
published ``config.json``), an exact parameter count obtained by instantiating the model on the
``meta`` device (no memory, no weights), and a transparent memory model for LoRA, QLoRA and full
training under ZeRO-3 / FSDP. Every number it returns is an *estimate* and is labelled so.
"""

from __future__ import annotations

import math
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
