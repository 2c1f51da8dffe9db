"""A lean decode loop for Qwen2.5-VL sampling: the same tokens as ``model.generate``, faster.

``model.generate`` runs every new token through the whole Hugging Face call stack: the
generation loop's bookkeeping, ``prepare_inputs_for_generation``, the model's wrappers
(output capture, keyword deprecation, gradient-checkpointing layers, the attention-function
registry), a fresh causal mask and a cache that grows by concatenation. For a small model at a
small batch that machinery, not the arithmetic, is most of a token's time; on the toy's CPU
runs it made sampling the largest part of an RL step.

:func:`sample` prepares the prompt with ``generate``'s own steps, in ``generate``'s order
(the 3D rotary positions, the image features once per image, the expansion to
``num_return_sequences`` rows), runs the prefill, and then each token with the decoder layers'
own operations: the same attention kernel and mask over the same keys and values (kept in
preallocated buffers), and the same token selection (``softmax`` then ``torch.multinomial`` on
the same random stream, or ``argmax``). The result is **token for token and bit for bit** what
``generate`` returns (``tests/test_decode.py`` compares sequences and log-probabilities exactly,
and fails on any of five small mutations of the loop), so nothing that samples through
:func:`r1reward.rollout.generate` changes its numbers. ``python benchmarks/bench_decode.py``
prints the two side by side.

Whatever the loop does not cover goes to ``generate`` unchanged (:func:`supported`): another
architecture, top-p below 1, attention other than ``sdpa``, sliding-window layers, videos, a
checkpoint whose ``generation_config`` asks for another logits processor (``bad_words_ids``,
``min_p``, ...; the sampling settings themselves are passed on every call), a model in training
mode, several processes (DeepSpeed ZeRO-3 and FSDP keep peers stepping
together inside ``generate``), or an MPS device. It leans on ``generate``'s private helpers
(``_prepare_position_ids_for_generation``, ``_prepare_multimodal_encoder_kwargs_for_generation``,
``_expand_inputs_for_generation``) of the transformers 5 series; the tests say when an upgrade
changes them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["base_model", "sample", "supported"]

#: ``(input_ids, scores) -> scores`` after Hugging Face's ``LogitsProcessor`` protocol.
Processor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def base_model(model: Any) -> Any:
    """The model under a peft wrapper (its LoRA layers stay in place inside it)."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def supported(model: Any, *, top_p: float = 1.0) -> bool:
    """Whether :func:`sample` can run ``model``'s decoding itself (else it calls ``generate``)."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    base = base_model(model)
    if not isinstance(base, Qwen2_5_VLForConditionalGeneration) or base.training or top_p < 1:
        return False
    text = base.config.get_text_config()
    if text._attn_implementation != "sdpa":
        return False
    if any(t != "full_attention" for t in getattr(text, "layer_types", None) or ()):
        return False
    if next(base.parameters()).device.type == "mps" or _processing_settings(base):
        return False
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)


#: generation_config fields that make ``generate`` add a logits processor which :func:`sample`
#: does not apply, with their neutral values (the sampling settings themselves are passed
#: explicitly on every call and override the checkpoint's).
_PROCESSING_DEFAULTS: dict[str, Any] = {
    "min_length": 0,
    "min_new_tokens": None,
    "bad_words_ids": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "min_p": None,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "encoder_repetition_penalty": 1.0,
    "exponential_decay_length_penalty": None,
    "sequence_bias": None,
    "renormalize_logits": False,
    "watermarking_config": None,
    "guidance_scale": None,
    "stop_strings": None,
}


def _processing_settings(base: Any) -> dict[str, Any]:
    """The checkpoint's generation_config settings that would change ``generate``'s scores
    beyond what :func:`sample` reproduces (then it hands the call to ``generate``)."""
    config = getattr(base, "generation_config", None)
    return {
        key: getattr(config, key)
        for key, neutral in _PROCESSING_DEFAULTS.items()
        if getattr(config, key, neutral) not in (neutral, None, [])
    }


class _Cache:
    """The prefill's keys and values copied into buffers with room for every new token; a
    step writes one column and attends over a view of the filled part. ``DynamicCache`` grows
    by concatenation, which copies the whole cache at every token; the attention reads the
    same numbers either way (a strided view gives the kernel the same values)."""

    def __init__(self, cache: Any, extra: int) -> None:
        self.keys, self.values = [], []
        for layer in cache.layers:
            for mine, theirs in ((self.keys, layer.keys), (self.values, layer.values)):
                rows, heads, length, dim = theirs.shape
                buf = theirs.new_empty((rows, heads, length + extra, dim))
                buf[:, :, :length] = theirs
                mine.append(buf)
        self.length = cache.layers[0].keys.shape[2]

    def update(self, key: torch.Tensor, value: torch.Tensor, layer: int):
        n = self.length
        self.keys[layer][:, :, n : n + 1] = key
        self.values[layer][:, :, n : n + 1] = value
        return self.keys[layer][:, :, : n + 1], self.values[layer][:, :, : n + 1]


def _decode_step(base: Any, ids: torch.Tensor, position_ids: torch.Tensor, mask, cache: _Cache):
    """Logits ``[B, V]`` for one new token per row: the operations of
    ``Qwen2_5_VLForConditionalGeneration.forward`` for a text token with a cache, in the same
    order and through the same kernels (sdpa), without the layers of wrappers around them."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb

    lm = base.model.language_model
    h = lm.embed_tokens(ids)
    text_pos, pos = position_ids[0], position_ids[1:]
    # create_causal_mask's answer for one query token under sdpa: nothing when no row is
    # padded, else the padding mask as [B, 1, 1, L] booleans
    causal = None if bool(mask.all()) else mask.bool()[:, None, None, :]
    cos, sin = lm.rotary_emb(h, pos)
    rows = h.shape[0]
    for layer in lm.layers:
        att, mlp = layer.self_attn, layer.mlp
        x = _norm(layer.input_layernorm, h)
        q = _linear(att.q_proj, x).view(rows, 1, -1, att.head_dim).transpose(1, 2)
        k = _linear(att.k_proj, x).view(rows, 1, -1, att.head_dim).transpose(1, 2)
        v = _linear(att.v_proj, x).view(rows, 1, -1, att.head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        k, v = cache.update(k, v, att.layer_idx)
        out, _ = sdpa_attention_forward(
            att, q, k, v, causal, dropout=0.0, scaling=att.scaling, sliding_window=None,
            position_ids=text_pos,
        )  # fmt: skip
        h = h + _linear(att.o_proj, out.reshape(rows, 1, -1).contiguous())
        x = _norm(layer.post_attention_layernorm, h)
        h = h + _linear(
            mlp.down_proj, mlp.act_fn(_linear(mlp.gate_proj, x)) * _linear(mlp.up_proj, x)
        )
    cache.length += 1
    h = _norm(lm.norm, h)
    return _linear(base.lm_head, h[:, -1:, :])[:, -1].to(copy=True, dtype=torch.float32)


def _linear(module: Any, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``; a plain ``nn.Linear`` without its module call (a LoRA or quantized layer
    is called as it is, adapters included)."""
    if (
        type(module) is torch.nn.Linear
        and not module._forward_hooks
        and not module._forward_pre_hooks
    ):
        return torch.nn.functional.linear(x, module.weight, module.bias)
    return module(x)


def _norm(module: Any, h: torch.Tensor) -> torch.Tensor:
    """``module(h)``; Qwen2.5-VL's RMSNorm written out (its operations, in its order)."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLRMSNorm

    if type(module) is not Qwen2_5_VLRMSNorm or module._forward_hooks or module._forward_pre_hooks:
        return module(h)
    dtype = h.dtype
    x = h.to(torch.float32)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + module.variance_epsilon)
    return module.weight * x.to(dtype)


def _forbid(scores: torch.Tensor, token_ids: Sequence[int]) -> torch.Tensor:
    """``scores`` with ``token_ids`` at -inf (generate's suppress and min-length processors)."""
    mask = torch.zeros(scores.shape[-1], dtype=torch.bool, device=scores.device)
    mask[list(token_ids)] = True
    return torch.where(mask, -math.inf, scores)


def _generate(
    model, inputs, max_new_tokens, stop_ids, pad_id, greedy, temperature, top_p, k, processors,
    min_new_tokens, suppress_tokens,
) -> torch.Tensor:  # fmt: skip
    """``model.generate`` with explicit neutral settings: a checkpoint's generation_config
    (Qwen2.5-VL-Instruct ships repetition_penalty=1.05, top_k=1, ...) must not change the
    distribution sampled from."""
    from transformers import LogitsProcessorList

    kwargs: dict[str, Any] = dict(
        eos_token_id=list(stop_ids),
        pad_token_id=pad_id,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
    )
    if greedy:
        kwargs.update(do_sample=False, num_return_sequences=1)
    else:
        kwargs.update(
            do_sample=True, temperature=temperature, top_p=top_p, top_k=0, typical_p=1.0,
            num_return_sequences=k,
        )  # fmt: skip
    if min_new_tokens:
        kwargs["min_new_tokens"] = min_new_tokens
    if suppress_tokens:
        kwargs["suppress_tokens"] = list(suppress_tokens)
    if processors:
        kwargs["logits_processor"] = LogitsProcessorList(list(processors))
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, **kwargs)
    return out if isinstance(out, torch.Tensor) else out.sequences


def sample(
    model: Any,
    inputs: dict[str, Any],
    *,
    max_new_tokens: int,
    stop_ids: Sequence[int],
    pad_id: int,
    do_sample: bool,
    temperature: float = 1.0,
    top_p: float = 1.0,
    num_return_sequences: int = 1,
    processors: Sequence[Processor] = (),
    min_new_tokens: int = 0,
    suppress_tokens: Sequence[int] = (),
) -> torch.Tensor:
    """``[rows, prompt + new]`` token ids, equal to ``model.generate(**inputs, ...)`` with these
    settings (left-padded prompts; the rows of a prompt's samples next to each other), under
    ``torch.inference_mode`` or ``no_grad`` as ``generate`` runs.

    ``processors`` see ``(input_ids, float32 scores)`` each step before the temperature, as
    ``generate``'s ``logits_processor`` do; ``min_new_tokens`` keeps the stop tokens out until
    that many tokens exist and ``suppress_tokens`` are never chosen (``generate``'s arguments of
    the same names). Without :func:`supported` this is ``model.generate`` itself.
    """
    greedy = not do_sample
    if not supported(model, top_p=1.0 if greedy else top_p) or "pixel_values_videos" in inputs:
        return _generate(
            model, inputs, max_new_tokens, stop_ids, pad_id, greedy, temperature, top_p,
            num_return_sequences, processors, min_new_tokens, suppress_tokens,
        )  # fmt: skip
    from transformers.cache_utils import DynamicCache

    # 1. the prefill, prepared by generate's own steps in generate's order: positions, the
    #    mask dropped when nothing is padded, the image features once per image, the
    #    expansion to k rows; then one forward pass over all rows (each row on its own, as in
    #    generate: the k copies of a prompt need not round alike)
    base = base_model(model)
    rows_each = 1 if greedy else num_return_sequences
    prompt_ids = inputs["input_ids"]
    kw = {key: value for key, value in inputs.items() if key != "input_ids"}
    kw["position_ids"] = base._prepare_position_ids_for_generation(prompt_ids, kw)
    if kw.get("attention_mask") is not None and bool((kw["attention_mask"] == 1).all()):
        kw["attention_mask"] = None
    kw = base._prepare_multimodal_encoder_kwargs_for_generation(kw)
    ids, kw = base._expand_inputs_for_generation(expand_size=rows_each, input_ids=prompt_ids, **kw)
    prefill = base(
        input_ids=ids, **kw, cache=DynamicCache(config=base.config), use_cache=True,
        logits_to_keep=1,
    )  # fmt: skip
    first = prefill.logits[:, -1].to(copy=True, dtype=torch.float32)
    cache = _Cache(prefill.cache, max(0, max_new_tokens - 1))
    del prefill
    position = kw["position_ids"][..., -1:]
    mask = kw.get("attention_mask")
    mask = torch.ones_like(ids) if mask is None else mask
    # 2. one token a step, as generate's sampling loop does it
    device = ids.device
    stops = torch.tensor(list(stop_ids), device=device)
    pad = torch.tensor(pad_id, device=device)
    prompt_len = prompt_ids.shape[1]
    unfinished = torch.ones(ids.shape[0], dtype=torch.bool, device=device)
    for step in range(max_new_tokens):
        if not bool(unfinished.any()):
            break
        if step == 0:
            scores = first
        else:
            position = position + 1
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
            scores = _decode_step(base, ids[:, -1:], position, mask, cache)
        if min_new_tokens and ids.shape[1] - prompt_len < min_new_tokens:
            scores = _forbid(scores, stop_ids)
        if suppress_tokens:
            scores = _forbid(scores, suppress_tokens)
        for proc in processors:
            scores = proc(ids, scores)
        if greedy:
            nxt = torch.argmax(scores, dim=-1)
        else:
            if temperature != 1.0:
                scores = scores / temperature
            nxt = torch.multinomial(torch.nn.functional.softmax(scores, dim=-1), 1).squeeze(1)
        nxt = nxt * unfinished + pad * (~unfinished)
        ids = torch.cat([ids, nxt[:, None]], dim=-1)
        unfinished = unfinished & ~torch.isin(nxt, stops)
    return ids
