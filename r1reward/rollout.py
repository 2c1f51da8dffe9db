"""Batched sampling for vision-language models, and log-probabilities of sampled completions.

R1-Reward samples judgments for RL rollouts (Sec. 3.2, one sample per prompt for
Reinforce++/StableReinforce, a group for GRPO) and K judgments per pair for Voting@K at test
time (Sec. 4.3). Both go through :func:`generate`:

- conversations are ``r1reward.prompt.build_messages`` outputs (PIL images inside);
- prompts are rendered with the processor's chat template (generation prompt
  ``<|im_start|>assistant\\n``), tokenized with their images and **left padded**, so every row's
  new tokens start at the same column;
- the K samples of one prompt share that prompt in one sampler call through
  ``num_return_sequences`` (no Python loop over samples); the sampler is
  :func:`r1reward.decode.sample`, ``model.generate``'s tokens bit for bit from a leaner loop;
- sampling stops at ``<|im_end|>`` (or ``<|endoftext|>``).

:func:`build_batch` puts prompts and completions back into tensors and
:func:`completion_logprobs` returns ``log pi(token)`` for every completion token, which is what
the policy loss (``r1reward.algorithms.policy_loss``) and the KL estimators consume.

``engine="vllm"`` samples on a colocated vLLM engine instead (:mod:`r1reward.rollout_vllm`, same
records; a clear ImportError when vllm is not installed); ``engine="auto"`` uses it when vllm is
installed and the model is on CUDA, and transformers otherwise.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from r1reward import decode
from r1reward.completion import (
    STOP_TOKENS,
    Completion,
    Conversation,
    batch_seed,
    split_row,
    stop_token_ids,
    tokenizer_of,
    visuals,
)

__all__ = [
    "STOP_TOKENS",
    "Completion",
    "encode",
    "encode_each",
    "eval_mode",
    "frozen_vision_cache",
    "generate",
    "build_batch",
    "completion_logprobs",
    "stop_token_ids",
    "token_logprobs",
]

# --------------------------------------------------------------------------------------------
# encoding
# --------------------------------------------------------------------------------------------


def encode(
    processor: Any,
    conversations: Sequence[Conversation],
    *,
    add_generation_prompt: bool = True,
    padding_side: str = "left",
) -> Any:
    """Render ``conversations`` with the chat template and tokenize them with their images.

    Args:
        processor: a Qwen2.5-VL-style processor (``load_model``'s second return value).
        conversations: ``build_messages`` outputs; images are PIL images or paths.
        add_generation_prompt: end each prompt with ``<|im_start|>assistant\\n``.
        padding_side: ``"left"`` (default: generation, RL) or ``"right"``.

    Returns:
        A ``BatchFeature`` with ``input_ids`` and ``attention_mask`` of shape ``(B, P)`` (P the
        longest prompt, shorter ones padded on ``padding_side``), and when images are present
        ``pixel_values`` ``(sum of patches, C*T*14*14)`` and ``image_grid_thw`` ``(n_images, 3)``
        (videos likewise), plus whatever else the processor returns (``mm_token_type_ids``).
    """
    if len(conversations) == 0:
        raise ValueError("encode: no conversations given")
    images: list[Any] = []
    videos: list[Any] = []
    for i, conv in enumerate(conversations):  # validates the messages before rendering
        im, vi = visuals(conv, i)
        images += im
        videos += vi
    texts = processor.apply_chat_template(
        list(conversations), tokenize=False, add_generation_prompt=add_generation_prompt
    )
    if isinstance(texts, str):
        texts = [texts]
    kwargs: dict[str, Any] = {}
    if images:
        kwargs["images"] = images
    if videos:
        kwargs["videos"] = videos
    return processor(
        text=texts, padding=True, padding_side=padding_side, return_tensors="pt", **kwargs
    )


def encode_each(processor: Any, conversations: Sequence[Conversation]) -> list[dict[str, Any]]:
    """``[dict(encode(processor, [c])) for c in conversations]`` from one batched call: each
    row's real tokens and its own images' rows of ``pixel_values`` / ``image_grid_thw``. The
    chat template, the tokenizer and the image processor treat every conversation on its own,
    so the pieces equal the one-by-one encodings (``tests/test_rollout.py`` checks it); a
    batch with videos or keys this does not know is encoded one by one."""
    batch = encode(processor, conversations)
    known = {"input_ids", "attention_mask", "mm_token_type_ids", "pixel_values", "image_grid_thw"}
    if set(batch.keys()) - known:
        return [dict(encode(processor, [c])) for c in conversations]
    counts = [len(visuals(c, i)[0]) for i, c in enumerate(conversations)]
    grids = batch.get("image_grid_thw")
    patches = grids.prod(-1).tolist() if grids is not None else []
    out, image, row = [], 0, 0
    for i, n in enumerate(counts):
        keep = batch["attention_mask"][i].bool()
        one: dict[str, Any] = {
            k: batch[k][i : i + 1, keep]
            for k in ("input_ids", "attention_mask", "mm_token_type_ids")
            if k in batch
        }
        if n:
            rows = sum(patches[image : image + n])
            one["pixel_values"] = batch["pixel_values"][row : row + rows]
            one["image_grid_thw"] = grids[image : image + n]
            image, row = image + n, row + rows
        out.append(one)
    return out


# --------------------------------------------------------------------------------------------
# generation
# --------------------------------------------------------------------------------------------


def _check_engine(engine: str, model: Any = None) -> str:
    """The engine that will run: ``"transformers"`` or ``"vllm"``.

    ``"vllm"`` needs the vllm package (clear ImportError with install instructions otherwise);
    ``"auto"`` picks vLLM when it is importable and the model sits on a CUDA device, and falls
    back to transformers otherwise (same :class:`Completion` records either way).
    """
    if engine == "transformers":
        return engine
    if engine == "vllm":
        try:
            import vllm  # noqa: F401
        except ImportError as err:
            raise ImportError(
                "rollout engine 'vllm' needs the vllm package, which is not installed. "
                "Install it on a CUDA machine with `pip install vllm` (or `pip install "
                "'r1reward[vllm]'`), or use engine='transformers'."
            ) from err
        return engine
    if engine == "auto":
        import importlib.util

        on_cuda = model is not None and _model_device(model).type == "cuda"
        has_vllm = importlib.util.find_spec("vllm") is not None
        return "vllm" if on_cuda and has_vllm else "transformers"
    raise ValueError(
        f"rollout engine {engine!r}: expected 'transformers' or 'vllm' "
        "(or 'auto': vLLM when installed and the model is on CUDA, else transformers)"
    )


def _vision_owner(model: Any) -> Any:
    """The submodule that turns pixels into visual tokens (Qwen2.5-VL's inner model: it has the
    vision tower ``visual`` and ``get_image_features``), or ``None`` for a text-only model."""
    for module in model.modules():
        if hasattr(type(module), "get_placeholder_mask") and hasattr(module, "visual"):
            return module
    return None


@contextlib.contextmanager
def frozen_vision_cache(model: Any) -> Iterator[dict]:
    """Compute the frozen vision tower's features of each image once inside the block.

    One RL step runs the vision tower on the same images again and again: in the sampling pass,
    in the old-log-prob pass and in every micro-batch of every PPO epoch. While the tower is
    frozen (no parameter of it requires a gradient, as with ``rl.freeze_vision``) and has no
    dropout, its output is a function of the image alone, so inside this block
    ``get_image_features`` keeps each image's features, keyed by its grid and a hash of its
    pixels, and computes only the images it has not seen (without gradients, outside inference
    mode, so the sampling pass can fill the cache that the update then reads). Yields the cache
    (``{key: features}``); a tower that is trained, or a model without one, is left alone (the
    cache stays empty)."""
    owner = _vision_owner(model)
    cache: dict = {}
    if (
        owner is None
        or any(p.requires_grad for p in owner.visual.parameters())
        or any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in owner.visual.modules())
    ):
        yield cache
        return
    original = owner.get_image_features

    def get_image_features(pixel_values, image_grid_thw=None, **kwargs):
        if image_grid_thw is None or set(kwargs) - {"return_dict"}:
            return original(pixel_values, image_grid_thw, **kwargs)
        grids = [tuple(g) for g in image_grid_thw.tolist()]
        chunks = pixel_values.split([t * h * w for t, h, w in grids])
        keys = [
            (
                g,
                hashlib.blake2b(
                    c.detach().float().cpu().contiguous().numpy().tobytes(), digest_size=16
                ).digest(),
            )
            for g, c in zip(grids, chunks)
        ]
        first = {}
        for i, key in enumerate(keys):
            if key not in cache:
                first.setdefault(key, i)
        if first:
            rows = list(first.values())
            with torch.inference_mode(False), torch.no_grad():
                out = original(
                    torch.cat([chunks[i] for i in rows]).clone(),
                    image_grid_thw[rows].clone(),
                    **kwargs,
                )
            for key, feats in zip(first, out.pooler_output):
                cache[key] = feats
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        return BaseModelOutputWithPooling(pooler_output=tuple(cache[k] for k in keys))

    owner.get_image_features = get_image_features
    try:
        yield cache
    finally:
        del owner.get_image_features


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """``model`` in eval mode (no dropout) inside the block, its own mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed torch's generators for the block without disturbing the caller's RNG state."""
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _model_device(model: Any) -> torch.device:
    try:
        return model.device
    except AttributeError:
        return next(model.parameters()).device


def generate(
    model: Any,
    processor: Any,
    conversations: Sequence[Conversation],
    *,
    num_return_sequences: int = 1,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    seed: int | None = None,
    progress: bool = False,
    engine: str = "transformers",
    return_logprobs: bool = False,
) -> list[list[Completion]]:
    """Sample ``num_return_sequences`` completions for each conversation.

    Prompts go to ``model.generate`` ``batch_size`` at a time (so one call produces
    ``batch_size * num_return_sequences`` rows), left padded, the K samples of a prompt sharing
    it through ``num_return_sequences``. With ``do_sample=False`` (or ``temperature == 0``)
    decoding is greedy and the K completions are copies of one greedy completion.

    Args:
        model: a causal (vision-)language model, possibly peft-wrapped. Its train/eval mode is
            restored afterwards.
        processor: its processor (chat template, image processor, tokenizer).
        conversations: ``build_messages`` outputs.
        seed: when given, the samples are reproducible: batch ``b`` (prompts
            ``b*batch_size ...``) is sampled under its own seed derived from ``(seed, b)``, so
            the same call gives the same completions (for the same ``batch_size``); the
            caller's global RNG state is left untouched.
        progress: show a tqdm bar over prompts.
        engine: ``"transformers"`` (default), ``"vllm"`` (colocated vLLM engine with weight
            sync, :mod:`r1reward.rollout_vllm`; needs vllm and CUDA) or ``"auto"`` (vLLM when
            installed and the model is on CUDA, else transformers). Same records either way.
        return_logprobs: also record each sampled token's log-probability
            (:attr:`Completion.logprobs`), read from the logits the sampling step computes
            anyway, so a trainer needs no separate pass for the old policy's log-probs. Only when
            sampling with the transformers engine; otherwise the completions carry ``None``.

    Returns:
        ``out[i]`` holds the ``num_return_sequences`` :class:`Completion` of conversation ``i``.
    """
    engine = _check_engine(engine, model)
    if num_return_sequences < 1:
        raise ValueError(f"num_return_sequences={num_return_sequences}: expected >= 1")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: expected >= 1")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens}: expected >= 1")
    greedy = (not do_sample) or temperature == 0
    if not greedy and not (temperature > 0 and 0 < top_p <= 1):
        raise ValueError(f"temperature={temperature}, top_p={top_p}: expected > 0 and (0, 1]")
    if engine == "vllm":
        from r1reward import rollout_vllm

        return rollout_vllm.generate(
            model,
            processor,
            conversations,
            num_return_sequences=num_return_sequences,
            do_sample=do_sample,
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            seed=seed,
            progress=progress,
        )
    if not hasattr(model, "generate") and hasattr(model, "module"):
        model = model.module  # a DistributedDataParallel wrapper
    tok = tokenizer_of(processor)
    stops = stop_token_ids(processor)
    stop_set = set(stops)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else stops[0]
    device = _model_device(model)
    k = num_return_sequences
    record = return_logprobs and not greedy
    results: list[list[Completion]] = [[] for _ in conversations]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(conversations), desc="generate", unit="prompt")
    with eval_mode(model), torch.inference_mode():
        for b, start in enumerate(range(0, len(conversations), batch_size)):
            chunk = conversations[start : start + batch_size]
            batch = encode(processor, chunk).to(device)
            prompt_len = batch["input_ids"].shape[1]
            recorder = _ChosenLogprobs(temperature) if record else None
            with _seeded(None if seed is None else batch_seed(seed, b), device):
                # model.generate's tokens, bit for bit, from a leaner loop; the checkpoint's
                # generation_config never changes the distribution that completion_logprobs
                # scores (r1reward.decode: explicit neutral settings where it calls generate)
                sequences = decode.sample(
                    model,
                    batch,
                    max_new_tokens=max_new_tokens,
                    stop_ids=stops,
                    pad_id=pad_id,
                    do_sample=not greedy,
                    temperature=temperature,
                    top_p=top_p,
                    num_return_sequences=k,
                    processors=[recorder] if recorder is not None else (),
                )
            new = sequences[:, prompt_len:].tolist()
            lps = recorder.finish(sequences[:, prompt_len:]).tolist() if recorder else None
            rows_per_prompt = 1 if greedy else k
            for r, row in enumerate(new):
                ids, finish = split_row(row, stop_set, pad_id)
                text = tok.decode(ids, skip_special_tokens=True)
                idx = start + r // rows_per_prompt
                copies = k if greedy else 1
                lp = lps[r][: len(ids)] if lps is not None else None
                for _ in range(copies):
                    results[idx].append(Completion(text, list(ids), idx, finish, lp))
            if bar is not None:
                bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return results


# --------------------------------------------------------------------------------------------
# log-probabilities
# --------------------------------------------------------------------------------------------


class _ChosenLogprobs:
    """Records the log-probability of each sampled token while ``generate`` runs.

    Placed among the processors (which ``generate`` applies before its temperature and top-p
    warpers), it sees each step's logits; the token chosen from them is known one call later
    (the last column of ``input_ids``), so only one ``[B, V]`` row of log-probs is kept at a
    time. :meth:`finish` adds the last token's and returns ``[B, T]``."""

    def __init__(self, temperature: float) -> None:
        self.temperature = float(temperature)
        self.prev: torch.Tensor | None = None
        self.out: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.prev is not None:
            self.out.append(self.prev.gather(1, input_ids[:, -1:]).squeeze(1))
        logits = scores.float()
        if self.temperature != 1.0:
            logits = logits / self.temperature
        self.prev = torch.log_softmax(logits, dim=-1)
        return scores

    def finish(self, new_tokens: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` log-probs of ``new_tokens`` ``[B, T]`` (the generated columns)."""
        if self.prev is None or new_tokens.shape[1] == 0:
            return torch.zeros(new_tokens.shape, dtype=torch.float32)
        last = self.prev.gather(1, new_tokens[:, -1:]).squeeze(1)
        cols = [*self.out, last][: new_tokens.shape[1]]
        return torch.stack(cols, dim=1).cpu()


def build_batch(
    processor: Any,
    conversations: Sequence[Conversation],
    completions: Sequence[Sequence[int] | Completion],
) -> tuple[Any, torch.Tensor]:
    """Tensors for scoring ``completions[i]`` as the answer to ``conversations[i]``.

    Layout per row: ``[left-padded prompt | completion | right padding]``.

    Returns:
        ``(batch, completion_mask)``: ``batch`` is :func:`encode`'s ``BatchFeature`` with
        ``input_ids``/``attention_mask`` extended to shape ``(B, P + C)`` (C the longest
        completion), images unchanged; ``completion_mask`` ``(B, P + C)`` is 1 on completion
        tokens (the stop token included) and 0 on prompt and padding.
    """
    if len(conversations) != len(completions):
        raise ValueError(
            f"build_batch: {len(conversations)} conversations but {len(completions)} completions"
        )
    ids = [list(c.token_ids if isinstance(c, Completion) else c) for c in completions]
    batch = encode(processor, conversations)
    tok = tokenizer_of(processor)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else stop_token_ids(processor)[0]
    bsz, p = batch["input_ids"].shape
    c = max((len(x) for x in ids), default=0)
    comp = torch.full((bsz, c), pad_id, dtype=batch["input_ids"].dtype)
    comp_mask = torch.zeros((bsz, c), dtype=batch["attention_mask"].dtype)
    for i, x in enumerate(ids):
        comp[i, : len(x)] = torch.tensor(x, dtype=comp.dtype)
        comp_mask[i, : len(x)] = 1
    batch["input_ids"] = torch.cat([batch["input_ids"], comp], dim=1)
    batch["attention_mask"] = torch.cat([batch["attention_mask"], comp_mask], dim=1)
    if "mm_token_type_ids" in batch:
        extra = torch.zeros((bsz, c), dtype=batch["mm_token_type_ids"].dtype)
        batch["mm_token_type_ids"] = torch.cat([batch["mm_token_type_ids"], extra], dim=1)
    completion_mask = torch.cat([torch.zeros((bsz, p), dtype=comp_mask.dtype), comp_mask], dim=1)
    return batch, completion_mask


def completion_logprobs(
    model: Any,
    batch: Any,
    completion_mask: torch.Tensor,
    *,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Per-token log-probabilities of the completion tokens under ``model``.

    ``out[b, t] = log pi(input_ids[b, t] | input_ids[b, :t], images)`` where
    ``completion_mask[b, t] == 1`` and 0 elsewhere. Only the logits from the first completion
    column on are computed (``logits_to_keep``), and the log-softmax is taken row by row in
    float32, so the ``(B, T, vocab)`` float32 tensor is never materialised.

    Args:
        model: the policy (or reference) model; gradients flow when called outside no_grad.
        batch: ``input_ids`` ``(B, T)``, ``attention_mask`` ``(B, T)`` and the image tensors
            (:func:`build_batch` output), on the model's device.
        completion_mask: ``(B, T)`` 0/1, 1 on the tokens to score; a token at column 0 cannot
            be scored (nothing precedes it) and must be 0.
        temperature: divide logits by it (to score samples drawn at that temperature).

    Returns:
        ``(B, T)`` float32 tensor of log-probabilities, zero where ``completion_mask`` is 0.
    """
    input_ids = batch["input_ids"]
    if completion_mask.shape != input_ids.shape:
        raise ValueError(
            f"completion_mask shape {tuple(completion_mask.shape)} != input_ids shape "
            f"{tuple(input_ids.shape)}"
        )
    bsz, t = input_ids.shape
    mask = completion_mask.to(input_ids.device)
    out = torch.zeros((bsz, t), dtype=torch.float32, device=input_ids.device)
    cols = mask.any(dim=0).nonzero()
    if cols.numel() == 0:
        return out
    first = int(cols[0])
    if first == 0:
        raise ValueError("completion_mask marks column 0, which has no preceding context")
    keep = t - first + 1  # logits at columns first-1 .. t-1 predict tokens first .. t
    logits = model(**batch, logits_to_keep=keep).logits  # (B, keep, V)
    logits = logits[:, :-1]  # predictions for columns first .. t-1
    scored = token_logprobs(logits, input_ids[:, first:], temperature)
    scored = scored * mask[:, first:].to(torch.float32)
    return torch.cat([out[:, :first], scored], dim=1)


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0):
    """``[B, T]`` log-probabilities of ``targets`` ``[B, T]`` under ``logits`` ``[B, T, V]`` at
    ``temperature``; the log-softmax is taken row by row in float32, so the ``[B, T, V]``
    float32 tensor is never materialised."""
    rows = []
    for logit, target in zip(logits, targets):
        row = logit.float()
        if temperature != 1.0:
            row = row / temperature
        rows.append(row.gather(-1, target.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(row, dim=-1))
    return torch.stack(rows)
